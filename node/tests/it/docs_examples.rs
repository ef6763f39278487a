//! The feature references in the README's examples exist in the example definitions
//! (`docs/examples/views.toml`), so a newcomer who copies them gets features, not
//! NOT_FOUND (the README once named `avg_amount_7d`, which the views call
//! `amount_avg_7d`). The README's Rust example is compiled as a doc test of
//! `quiver-client`.

use std::collections::BTreeSet;
use std::path::Path;

use quiver_node::registry::DefinitionFile;

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `view:feature` references (and `view:*`) of the example definitions, and the
/// feature services.
fn defined() -> (BTreeSet<String>, BTreeSet<String>) {
    let file = DefinitionFile::from_toml(&repo_file("docs/examples/views.toml")).unwrap();
    let mut refs = BTreeSet::new();
    for v in &file.views {
        refs.insert(format!("{}:*", v.name));
        for f in &v.features {
            refs.insert(format!("{}:{}", v.name, f.name));
        }
    }
    let services = file
        .feature_services
        .iter()
        .map(|s| s.name.clone())
        .collect();
    (refs, services)
}

/// Every `ident:ident` (or `ident:*`) token of `text`: feature references.
fn references(text: &str) -> Vec<String> {
    let is_ident = |s: &str| {
        !s.is_empty()
            && s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '*'))
        .filter_map(|tok| {
            let (view, feature) = tok.split_once(':')?;
            (is_ident(view) && (feature == "*" || is_ident(feature))).then(|| tok.to_string())
        })
        .collect()
}

/// The fenced code blocks of a Markdown text, with their info strings.
fn code_blocks(md: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in md.lines() {
        let trimmed = line.trim_start();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

#[test]
fn the_readme_examples_name_features_the_example_views_define() {
    let (refs, services) = defined();
    let readme = repo_file("README.md");
    let mut checked = 0;
    for (info, body) in code_blocks(&readme) {
        if info != "rust" && info != "sh" {
            continue;
        }
        for r in references(&body) {
            assert!(
                refs.contains(&r),
                "README ({info} example) names {r}, which docs/examples/views.toml does not define"
            );
            checked += 1;
        }
        for line in body.lines() {
            if let Some(rest) = line.split("--service ").nth(1) {
                let name = rest.split_whitespace().next().unwrap_or("");
                assert!(
                    services.contains(name),
                    "README names feature service {name:?}, which docs/examples/views.toml does not define"
                );
                checked += 1;
            }
        }
    }
    // The README shows lookups in both the shell and the Rust examples.
    assert!(
        checked >= 6,
        "only {checked} references found: did the README change?"
    );
}

#[test]
fn the_reference_scanner_finds_what_it_should() {
    assert_eq!(
        references(r#"Lookup::features(["a_b:c1", "v:*"]) --features x:y,z:w http://h:1"#),
        ["a_b:c1", "v:*", "x:y", "z:w"]
    );
    let blocks = code_blocks("t\n```rust\nlet x = 1;\n```\n```\nout\n```\n");
    assert_eq!(blocks[0], ("rust".to_string(), "let x = 1;\n".to_string()));
    assert_eq!(blocks[1].0, "");
}
