//! MySQL and MariaDB.
//!
//! - `sink/`: the MySQL/MariaDB sink (replication into a MySQL or MariaDB database).

pub mod sink;
