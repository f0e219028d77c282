//! Keys from AWS's shared files, read as AWS's own tools read them: the profile `AWS_PROFILE`
//! names (else `default`), first in the credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//! `~/.aws/credentials`, sections `[name]`), then in the config file (`AWS_CONFIG_FILE`, else
//! `~/.aws/config`, sections `[profile name]` and `[default]`).
//!
//! Only keys written in the profile are used (`aws_access_key_id`, `aws_secret_access_key`,
//! `aws_session_token`). A profile that gets its keys some other way (`role_arn`,
//! `credential_process`, SSO, web identity) is refused with what to do instead, rather than
//! passed over: a user who named a profile expects it, not the instance's role, to be used.

use sluice_core::redact::Secret;

use super::credentials::Keys;

/// Settings of a profile that make its keys some other way than writing them down.
const OTHER_WAYS: [&str; 5] = [
    "role_arn",
    "credential_process",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
];

/// The keys of the chosen profile. `Ok(None)`: no profile was named and the `default` one has
/// no keys (or there are no files); `Err`: what is wrong, naming the file and the profile.
/// `var` reads the environment (a parameter, so tests need not change the process's).
pub(super) fn profile_keys(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Keys>, String> {
    let named = var("AWS_PROFILE");
    let profile = named.clone().unwrap_or_else(|| "default".to_owned());
    let home = var("HOME").unwrap_or_default();
    let credentials =
        var("AWS_SHARED_CREDENTIALS_FILE").unwrap_or_else(|| format!("{home}/.aws/credentials"));
    let config = var("AWS_CONFIG_FILE").unwrap_or_else(|| format!("{home}/.aws/config"));
    let config_section = if profile == "default" {
        profile.clone()
    } else {
        format!("profile {profile}")
    };
    let mut other_way = None;
    for (path, section) in [(&credentials, &profile), (&config, &config_section)] {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("reading the AWS credentials in {path}: {e}")),
        };
        let Some(settings) = section_settings(&text, section) else {
            continue;
        };
        let get = |key: &str| {
            settings
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(id), Some(secret)) => {
                let token = get("aws_session_token").map(Secret::new);
                tracing::info!(profile, file = %path, "S3 keys from an AWS profile");
                return Ok(Some(Keys::fixed(id, Secret::new(secret), token)));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(format!(
                    "the AWS profile {profile} in {path} has only one of \
                     aws_access_key_id and aws_secret_access_key: add the other"
                ))
            }
            (None, None) => {
                if let Some(way) = OTHER_WAYS.iter().find(|way| get(way).is_some()) {
                    other_way = Some((way.to_string(), path.clone()));
                }
            }
        }
    }
    if let Some((way, path)) = other_way {
        return Err(format!(
            "the AWS profile {profile} in {path} gets its keys by {way}, which sluice does not \
             do: give the keys themselves (in the profile, the sink's s3 settings or \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or run where an instance or \
             container role gives them"
        ));
    }
    match named {
        Some(_) => Err(format!(
            "AWS_PROFILE={profile}, but neither {credentials} ([{profile}]) nor {config} \
             ([{config_section}]) holds keys for it: add aws_access_key_id and \
             aws_secret_access_key to it, or unset AWS_PROFILE"
        )),
        None => Ok(None),
    }
}

/// The `key = value` settings of `[section]` in an INI file as AWS writes them (comment lines
/// start with `#` or `;`); None when the file has no such section.
fn section_settings(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut settings = None::<Vec<(String, String)>>;
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            if inside {
                settings.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if let (true, Some((key, value))) = (inside, line.split_once('=')) {
            settings
                .get_or_insert_with(Vec::new)
                .push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The keys found with `env` (HOME is a fresh directory holding `files`).
    fn found(
        files: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Result<Option<(String, String, Option<String>)>, String> {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        for (name, text) in files {
            std::fs::write(home.path().join(".aws").join(name), text).unwrap();
        }
        let mut vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.insert("HOME".into(), home.path().display().to_string());
        let keys = profile_keys(&|name: &str| vars.get(name).cloned())?;
        Ok(keys.map(|k| {
            (
                k.access_key_id.clone(),
                k.secret_access_key.expose().to_owned(),
                k.session_token.as_ref().map(|t| t.expose().to_owned()),
            )
        }))
    }

    const CREDENTIALS: &str = "# mine\n[default]\naws_access_key_id = AKIADEFAULT\n\
        aws_secret_access_key = s3cret\n\n[work]\n; temporary\naws_access_key_id=AKIAWORK\n\
        aws_secret_access_key=w0rk\naws_session_token = tok\n";

    #[test]
    fn the_default_profile_or_the_named_one_gives_its_keys() {
        assert_eq!(
            found(&[("credentials", CREDENTIALS)], &[]).unwrap(),
            Some(("AKIADEFAULT".into(), "s3cret".into(), None))
        );
        assert_eq!(
            found(&[("credentials", CREDENTIALS)], &[("AWS_PROFILE", "work")]).unwrap(),
            Some(("AKIAWORK".into(), "w0rk".into(), Some("tok".into())))
        );
        // The config file's `[profile name]`, when the credentials file has none.
        let config = "[profile ci]\nregion = eu-west-1\naws_access_key_id = AKIACI\n\
                      aws_secret_access_key = c1\n";
        assert_eq!(
            found(&[("config", config)], &[("AWS_PROFILE", "ci")]).unwrap(),
            Some(("AKIACI".into(), "c1".into(), None))
        );
        // Files elsewhere, named by the environment.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(&path, CREDENTIALS).unwrap();
        assert_eq!(
            found(
                &[],
                &[("AWS_SHARED_CREDENTIALS_FILE", path.to_str().unwrap())]
            )
            .unwrap(),
            Some(("AKIADEFAULT".into(), "s3cret".into(), None))
        );
    }

    #[test]
    fn no_files_or_no_default_keys_go_on_to_roles_and_a_named_profile_must_exist() {
        assert_eq!(found(&[], &[]).unwrap(), None);
        assert_eq!(
            found(&[("config", "[default]\nregion = us-east-1\n")], &[]).unwrap(),
            None
        );
        let missing =
            found(&[("credentials", CREDENTIALS)], &[("AWS_PROFILE", "prod")]).unwrap_err();
        assert!(
            missing.contains("AWS_PROFILE=prod") && missing.contains("[profile prod]"),
            "{missing}"
        );
    }

    #[test]
    fn a_profile_without_its_keys_written_down_is_refused_with_the_way_it_names() {
        let config =
            "[profile admin]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = default\n";
        let refused = found(&[("config", config)], &[("AWS_PROFILE", "admin")]).unwrap_err();
        assert!(
            refused.contains("admin") && refused.contains("role_arn"),
            "{refused}"
        );
        let half = found(
            &[("credentials", "[default]\naws_access_key_id = AKIA\n")],
            &[],
        )
        .unwrap_err();
        assert!(half.contains("only one of"), "{half}");
    }
}
