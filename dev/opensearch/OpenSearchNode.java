// A single-node OpenSearch 2.19 server started from Maven Central's jars (dev/opensearch/pom.xml):
// there is no distribution tarball on this machine, so the usual bootstrap (bin/opensearch, the
// plugin directory scan) is replaced by this main, which builds a Node with the modules on the
// classpath through Node's protected constructor.
//
//   java -cp 'target/opensearch/libs/*' dev/opensearch/OpenSearchNode.java HOME HTTP_PORT
//
// HOME holds data/ and logs/. The node binds 127.0.0.1 only. SIGTERM closes the node cleanly.

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;

import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

public class OpenSearchNode extends Node {
    OpenSearchNode(Environment environment) {
        super(environment, List.<Class<? extends Plugin>>of(
                org.opensearch.transport.Netty4Plugin.class,
                org.opensearch.analysis.common.CommonAnalysisPlugin.class,
                org.opensearch.painless.PainlessPlugin.class,
                org.opensearch.index.reindex.ReindexPlugin.class,
                org.opensearch.index.mapper.MapperExtrasPlugin.class), true);
    }

    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]).toAbsolutePath();
        String httpPort = args.length > 1 ? args[1] : "9200";
        Settings settings = Settings.builder()
                .put("path.home", home.toString())
                .put("path.data", home.resolve("data").toString())
                .put("path.logs", home.resolve("logs").toString())
                .put("cluster.name", "sluice-dev")
                .put("node.name", "sluice-dev-1")
                .put("discovery.type", "single-node")
                .put("network.host", "127.0.0.1")
                .put("http.port", httpPort)
                .put("transport.port", "9300-9399")
                // A development box: a nearly full disk must not turn indexes read-only.
                .put("cluster.routing.allocation.disk.threshold_enabled", false)
                .build();
        Node node = new OpenSearchNode(new Environment(settings, home.resolve("config")));
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }));
        node.start();
        System.out.println("OpenSearch node started on 127.0.0.1:" + httpPort);
        closed.await();
    }
}
