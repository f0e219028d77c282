//! The Typesense sink (in progress).
