//! MySQL and MariaDB.
//!
//! - `source/`: the MySQL/MariaDB source (consistent snapshot, then the row binlog).
//! - `sink/`: the MySQL/MariaDB sink (replication into a MySQL or MariaDB database).

pub mod sink;
pub mod source;
pub mod tls;
