//! Registry errors with Confluent's error codes: the HTTP status is the code's first three
//! digits, the body `{"error_code": N, "message": "…"}`.

/// An error a registry operation answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    pub code: u32,
    pub message: String,
}

impl RegistryError {
    fn new(code: u32, message: impl Into<String>) -> RegistryError {
        RegistryError {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status: 40401 → 404, 409 → 409, 50001 → 500.
    pub fn status(&self) -> u16 {
        let mut code = self.code;
        while code >= 1000 {
            code /= 10;
        }
        u16::try_from(code).unwrap_or(500)
    }

    pub fn subject_not_found(subject: &str) -> RegistryError {
        RegistryError::new(40401, format!("Subject '{subject}' not found."))
    }

    pub fn version_not_found(subject: &str, version: u32) -> RegistryError {
        RegistryError::new(
            40402,
            format!("Version {version} not found for subject '{subject}'."),
        )
    }

    pub fn schema_not_found(what: impl std::fmt::Display) -> RegistryError {
        RegistryError::new(40403, format!("Schema {what} not found"))
    }

    pub fn subject_soft_deleted(subject: &str) -> RegistryError {
        RegistryError::new(
            40404,
            format!(
                "Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
            ),
        )
    }

    pub fn subject_not_soft_deleted(subject: &str) -> RegistryError {
        RegistryError::new(
            40405,
            format!(
                "Subject '{subject}' was not deleted first before being permanently deleted; \
                 delete it without permanent=true first"
            ),
        )
    }

    pub fn version_soft_deleted(subject: &str, version: u32) -> RegistryError {
        RegistryError::new(
            40406,
            format!(
                "Version {version} of subject '{subject}' was soft deleted. Set permanent=true \
                 to delete permanently"
            ),
        )
    }

    pub fn version_not_soft_deleted(subject: &str, version: u32) -> RegistryError {
        RegistryError::new(
            40407,
            format!(
                "Version {version} of subject '{subject}' was not deleted first before being \
                 permanently deleted; delete it without permanent=true first"
            ),
        )
    }

    pub fn no_subject_compatibility(subject: &str) -> RegistryError {
        RegistryError::new(
            40408,
            format!(
                "Subject '{subject}' does not have subject-level compatibility configured; \
                 add defaultToGlobal=true to get the global level"
            ),
        )
    }

    pub fn no_subject_mode(subject: &str) -> RegistryError {
        RegistryError::new(
            40409,
            format!("Subject '{subject}' does not have subject-level mode configured"),
        )
    }

    pub fn incompatible(subject: &str, messages: &[String]) -> RegistryError {
        RegistryError::new(
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \
                 \"{subject}\", details: [{}]",
                messages.join("; ")
            ),
        )
    }

    pub fn invalid_schema(reason: impl std::fmt::Display) -> RegistryError {
        RegistryError::new(42201, format!("Invalid schema: {reason}"))
    }

    pub fn invalid_version(text: &str) -> RegistryError {
        RegistryError::new(
            42202,
            format!(
                "The specified version '{text}' is not a valid version id. Allowed values are \
                 between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }

    pub fn invalid_compatibility(text: &str) -> RegistryError {
        RegistryError::new(
            42203,
            format!(
                "Invalid compatibility level '{text}'. Valid values are NONE, BACKWARD, \
                 BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL and FULL_TRANSITIVE"
            ),
        )
    }

    pub fn invalid_mode(text: &str) -> RegistryError {
        RegistryError::new(
            42204,
            format!("Invalid mode '{text}'. Valid values are READWRITE, READONLY and IMPORT"),
        )
    }

    pub fn not_permitted(message: impl Into<String>) -> RegistryError {
        RegistryError::new(42205, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> RegistryError {
        RegistryError::new(422, message)
    }

    pub fn store(reason: impl std::fmt::Display) -> RegistryError {
        RegistryError::new(50001, format!("Error in the backend data store: {reason}"))
    }

    pub fn route_not_found() -> RegistryError {
        RegistryError::new(404, "HTTP 404 Not Found")
    }

    pub fn method_not_allowed() -> RegistryError {
        RegistryError::new(405, "HTTP 405 Method Not Allowed")
    }

    pub fn bad_request(message: impl Into<String>) -> RegistryError {
        RegistryError::new(400, message)
    }
}
