// Reads segment files of sluice's embedded log with Kafka's own record classes (kafka-clients):
// every batch's CRC is checked and its records (decompressed by Kafka's LZ4 reader) printed,
// one line each: compression offset timestamp key value header=value..., bytes in hex, "-" for
// null. Run by integration-tests/tests/kafka_format.rs with the jars `dev/services up` fetches.
import java.io.File;
import java.nio.ByteBuffer;
import java.util.HexFormat;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.record.internal.FileRecords;
import org.apache.kafka.common.record.internal.Record;
import org.apache.kafka.common.record.internal.RecordBatch;

public class ReadSegments {
    public static void main(String[] args) throws Exception {
        HexFormat hex = HexFormat.of();
        StringBuilder out = new StringBuilder();
        for (String path : args) {
            try (FileRecords records = FileRecords.open(new File(path))) {
                for (RecordBatch batch : records.batches()) {
                    batch.ensureValid();
                    for (Record record : batch) {
                        out.append(batch.compressionType().name).append(' ')
                            .append(record.offset()).append(' ')
                            .append(record.timestamp()).append(' ')
                            .append(record.hasKey() ? hex.formatHex(bytes(record.key())) : "-").append(' ')
                            .append(record.hasValue() ? hex.formatHex(bytes(record.value())) : "-");
                        for (Header header : record.headers()) {
                            out.append(' ').append(header.key()).append('=')
                                .append(header.value() == null ? "-" : hex.formatHex(header.value()));
                        }
                        out.append('\n');
                    }
                }
            }
        }
        System.out.print(out);
    }

    static byte[] bytes(ByteBuffer buffer) {
        byte[] copy = new byte[buffer.remaining()];
        buffer.duplicate().get(copy);
        return copy;
    }
}
