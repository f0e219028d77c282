//! Destination names from templates over a table's topic: the index, collection or table a
//! sink writes a topic's rows to (`{topic}`, `{source}`, `{schema}`, `{table}`).

use sluice_core::event::TableId;

/// `template` with its placeholders filled for a table's topic: `{topic}` (the log topic,
/// `<source>.<schema>.<table>`), `{source}`, `{schema}`, `{table}`.
pub fn fill_template(template: &str, topic: &str, table: &TableId) -> String {
    let source = topic.split('.').next().unwrap_or(topic);
    template
        .replace("{topic}", topic)
        .replace("{source}", source)
        .replace("{schema}", &table.namespace)
        .replace("{table}", &table.name)
}

/// Checks a template's placeholders (no I/O): `None` when fine, else what is wrong. `what`
/// names what the template names ("an index", "a table").
pub fn check_template(template: &str, what: &str) -> Option<String> {
    if template.trim().is_empty() {
        return Some(format!(
            "name {what}, e.g. \"{{topic}}\" or \"shop_{{table}}\""
        ));
    }
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            return Some(format!("{template:?} has an unclosed '{{'"));
        };
        let name = &rest[start + 1..start + len];
        if !matches!(name, "topic" | "source" | "schema" | "table") {
            return Some(format!(
                "{template:?} names {{{name}}}; the placeholders are {{topic}}, {{source}}, \
                 {{schema}} and {{table}}"
            ));
        }
        rest = &rest[start + len + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_and_are_checked() {
        let table = TableId {
            namespace: "Public".into(),
            name: "Items".into(),
        };
        assert_eq!(
            fill_template("{source}_{schema}_{table}-v1", "shop.Public.Items", &table),
            "shop_Public_Items-v1"
        );
        assert_eq!(check_template("{topic}", "a table"), None);
        assert!(check_template("{tabel}", "a table")
            .unwrap()
            .contains("{tabel}"));
        assert!(check_template("x{topic", "a table")
            .unwrap()
            .contains("unclosed"));
        assert!(check_template(" ", "an index")
            .unwrap()
            .contains("name an index"));
    }
}
