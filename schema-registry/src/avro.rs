//! Avro encoding of change events: schemas derived from table schemas (`schema`), the binary
//! encoder with Confluent's wire header (`encode`), and reading records back as JSON
//! (`decode`).

pub mod decode;
pub mod encode;
pub(crate) mod register;
pub mod rows;
pub mod schema;
mod wire;

pub use self::decode::AvroDecoder;
pub use self::encode::AvroEncoder;
pub use self::schema::DecimalHandling;
pub use self::wire::DatumError;
