//! Errors that are a reason and nothing more: a parser or a check that found something wrong,
//! with no underlying error to keep as a source. Each domain declares its own type with
//! [`reason_error!`](crate::reason_error), so that a history-fold failure cannot be passed off
//! as a config mistake, every one is a `std::error::Error`, and no caller decides anything by
//! matching its text (errors that need deciding on are enums: `retry::ServerErrorClass`,
//! `event_log::LogError`, ...).

/// Declares `pub struct $name(String)`: an error whose message says what is wrong.
/// `From<String>` and `From<&str>` let a function build it from the text it formats.
#[macro_export]
macro_rules! reason_error {
    ($(#[$meta:meta])* $vis:vis $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        $vis struct $name(pub String);

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::error::Error for $name {}

        impl ::std::convert::From<String> for $name {
            fn from(reason: String) -> Self {
                $name(reason)
            }
        }

        impl ::std::convert::From<&str> for $name {
            fn from(reason: &str) -> Self {
                $name(reason.to_owned())
            }
        }
    };
}

reason_error!(
    /// A type name that is not one of sluice's data types (`DataType`'s text form).
    pub UnknownDataType
);
