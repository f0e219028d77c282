//! Failpoints at the crash-relevant spots of an append (before each fsync, between the data and
//! its commit record), for tests that make I/O fail on purpose. Compiled to nothing unless the
//! `failpoints` feature is on.

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::sync::Mutex;

    static ARMED: Mutex<Option<HashMap<&'static str, u32>>> = Mutex::new(None);

    /// Makes the failpoint `name` fail once after it has been passed `after` more times.
    pub fn arm(name: &'static str, after: u32) {
        ARMED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(name, after);
    }

    pub(crate) fn hit(name: &'static str) -> std::io::Result<()> {
        let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
        let Some(remaining) = armed.as_mut().and_then(|map| map.get_mut(name)) else {
            return Ok(());
        };
        if *remaining > 0 {
            *remaining -= 1;
            return Ok(());
        }
        armed.as_mut().expect("checked above").remove(name);
        Err(std::io::Error::other(format!("failpoint {name}")))
    }
}

#[cfg(feature = "failpoints")]
pub use armed::arm;
#[cfg(feature = "failpoints")]
pub(crate) use armed::hit;

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_name: &'static str) -> std::io::Result<()> {
    Ok(())
}
