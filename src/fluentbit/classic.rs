//! Reads fluent-bit's classic configuration format: `[SECTION]` headers, `Key Value` lines,
//! `#` comments, `@SET NAME=VALUE`, `@INCLUDE FILE` and `${NAME}` in values.
//!
//! Section names and keys are compared without regard to case, as fluent-bit does; both keep
//! their spelling for messages. A value is the rest of its line, trimmed: there are no inline
//! comments and no quoting.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::FluentBitError;
use super::remarks::Remarks;

/// How deep `@INCLUDE`s may nest; deeper is taken for a cycle that paths alone did not reveal.
const MAX_INCLUDE_DEPTH: usize = 32;

/// Where a line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The file, as named by the user or joined from an `@INCLUDE`.
    pub(crate) file: PathBuf,
    /// The line, counted from 1.
    pub(crate) line: usize,
}

/// A `[SECTION]` and its entries, in file order.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    /// The name in upper case, such as `OUTPUT`.
    pub(crate) name: String,
    /// The header's line.
    pub(crate) origin: Origin,
    /// The `Key Value` lines, with variables substituted.
    pub(crate) entries: Vec<Entry>,
}

/// One `Key Value` line.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The key as written.
    pub(crate) key: String,
    /// The value, trimmed, with `${NAME}` substituted.
    pub(crate) value: String,
    /// Where it was written.
    pub(crate) origin: Origin,
}

impl Entry {
    /// Whether this is the key `key`, given in lower case.
    pub(crate) fn is(&self, key: &str) -> bool {
        self.key.eq_ignore_ascii_case(key)
    }
}

impl Section {
    /// The value of `Name` in lower case (the plugin), or an empty string without one.
    pub(crate) fn plugin(&self) -> String {
        let name = self.entries.iter().rev().find(|entry| entry.is("name"));
        name.map(|entry| entry.value.to_ascii_lowercase()).unwrap_or_default()
    }
}

/// Reads `text`, the contents of `path`, with the `@INCLUDE`d files it names.
///
/// `env` looks up environment variables for `${NAME}`; `@SET` variables win over it.
pub(crate) fn read(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    remarks: &mut Remarks,
) -> Result<Vec<Section>, FluentBitError> {
    let mut reader =
        Reader { env, variables: HashMap::new(), sections: Vec::new(), open_files: Vec::new() };
    reader.read_file(text, path, remarks)?;
    let Reader { mut sections, variables, .. } = reader;
    for section in &mut sections {
        substitute_section(section, &variables, env, remarks);
    }
    Ok(sections)
}

struct Reader<'env> {
    env: &'env dyn Fn(&str) -> Option<String>,
    /// Variables from `@SET`, the last definition of each.
    variables: HashMap<String, String>,
    sections: Vec<Section>,
    /// The files being read, outermost first, to refuse an `@INCLUDE` cycle.
    open_files: Vec<PathBuf>,
}

impl Reader<'_> {
    fn read_file(
        &mut self,
        text: &str,
        path: &Path,
        remarks: &mut Remarks,
    ) -> Result<(), FluentBitError> {
        self.open_files.push(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()));
        // Keys belong to the last header of their own file: an included file neither continues
        // the includer's section nor leaves its own open for the includer.
        let mut current_section = None;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw_line) in text.lines().enumerate() {
            let origin = Origin { file: path.to_owned(), line: index + 1 };
            let line = raw_line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(directive) = line.strip_prefix('@') {
                self.directive(directive, &origin, remarks)?;
            } else if line.starts_with('[') {
                self.sections.push(section_header(line, origin)?);
                current_section = Some(self.sections.len() - 1);
            } else {
                let Some(index) = current_section else {
                    return Err(syntax(&origin, "a key outside any [SECTION]".into()));
                };
                self.sections[index].entries.push(entry(line, origin)?);
            }
        }
        self.open_files.pop();
        Ok(())
    }

    fn directive(
        &mut self,
        directive: &str,
        origin: &Origin,
        remarks: &mut Remarks,
    ) -> Result<(), FluentBitError> {
        let (name, argument) = directive.split_once(char::is_whitespace).unwrap_or((directive, ""));
        let argument = argument.trim();
        match name.to_ascii_lowercase().as_str() {
            "set" => self.set(argument, origin),
            "include" => self.include(argument, origin, remarks),
            _ => {
                remarks.warn_line(origin, format!("unknown directive @{name} ignored"));
                Ok(())
            }
        }
    }

    fn set(&mut self, argument: &str, origin: &Origin) -> Result<(), FluentBitError> {
        let definition = argument.split_once('=').map(|(name, value)| (name.trim(), value.trim()));
        let Some((name, value)) = definition.filter(|(name, _)| !name.is_empty()) else {
            return Err(syntax(origin, format!("@SET {argument:?} is not NAME=VALUE")));
        };
        let value = substitute(value, &self.variables, self.env, &mut Vec::new());
        self.variables.insert(name.to_owned(), value);
        Ok(())
    }

    fn include(
        &mut self,
        argument: &str,
        origin: &Origin,
        remarks: &mut Remarks,
    ) -> Result<(), FluentBitError> {
        if argument.is_empty() {
            return Err(syntax(origin, "@INCLUDE names no file".into()));
        }
        let pattern = substitute(argument, &self.variables, self.env, &mut Vec::new());
        // Relative to the including file, so that a configuration directory can move as a whole.
        let base = origin.file.parent().unwrap_or(Path::new(""));
        let files = included_files(&base.join(&pattern))?;
        if files.is_empty() {
            remarks.warn_line(origin, format!("@INCLUDE {pattern} matches no file"));
        }
        for file in files {
            let canonical = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if self.open_files.contains(&canonical) || self.open_files.len() >= MAX_INCLUDE_DEPTH {
                let problem =
                    format!("@INCLUDE {} includes a file that is being read", file.display());
                return Err(syntax(origin, problem));
            }
            let text = std::fs::read_to_string(&file)
                .map_err(|source| FluentBitError::Read { path: file.clone(), source })?;
            self.read_file(&text, &file, remarks)?;
        }
        Ok(())
    }
}

/// The files an `@INCLUDE` names: the path itself, or the sorted matches of `*` and `?` in its
/// last component.
fn included_files(path: &Path) -> Result<Vec<PathBuf>, FluentBitError> {
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![path.to_owned()]);
    }
    let directory = path.parent().unwrap_or(Path::new("."));
    let listing = std::fs::read_dir(directory)
        .map_err(|source| FluentBitError::Read { path: directory.to_owned(), source })?;
    let mut files: Vec<PathBuf> = listing
        .filter_map(Result::ok)
        .filter(|item| wildcard_match(&name, &item.file_name().to_string_lossy()))
        .map(|item| item.path())
        .filter(|file| file.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Whether `text` matches `pattern`, where `*` is any run of characters and `?` one character.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // matches[j]: the pattern so far matches the first j characters of the text.
    let mut matches = vec![false; text.len() + 1];
    matches[0] = true;
    for symbol in pattern {
        let mut next = vec![false; text.len() + 1];
        for j in 0..=text.len() {
            next[j] = match symbol {
                '*' => matches[j] || (j > 0 && next[j - 1]),
                '?' => j > 0 && matches[j - 1],
                literal => j > 0 && matches[j - 1] && text[j - 1] == literal,
            };
        }
        matches = next;
    }
    matches[text.len()]
}

fn section_header(line: &str, origin: Origin) -> Result<Section, FluentBitError> {
    let name = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).map(str::trim);
    match name {
        Some(name) if !name.is_empty() => {
            Ok(Section { name: name.to_ascii_uppercase(), origin, entries: Vec::new() })
        }
        _ => Err(syntax(&origin, format!("{line:?} is not a [SECTION] header"))),
    }
}

fn entry(line: &str, origin: Origin) -> Result<Entry, FluentBitError> {
    match line.split_once(char::is_whitespace) {
        Some((key, value)) => {
            Ok(Entry { key: key.to_owned(), value: value.trim().to_owned(), origin })
        }
        None => Err(syntax(&origin, format!("key {line:?} has no value"))),
    }
}

fn syntax(origin: &Origin, problem: String) -> FluentBitError {
    FluentBitError::Syntax { path: origin.file.clone(), line: origin.line, problem }
}

/// Substitutes variables in every value and warns about what a value cannot mean as written.
fn substitute_section(
    section: &mut Section,
    variables: &HashMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
    remarks: &mut Remarks,
) {
    let mut entries = std::mem::take(&mut section.entries);
    for entry in &mut entries {
        let mut undefined = Vec::new();
        entry.value = substitute(&entry.value, variables, env, &mut undefined);
        for name in undefined {
            let message = format!(
                "${{{name}}} is neither @SET nor an environment variable; it is replaced by \
                 nothing, as fluent-bit does"
            );
            remarks.warn_key(section, entry, message);
        }
        if entry.value.contains("{{") {
            let message = "\"{{\" looks like a template expression that was not rendered (Nomad \
                           renders it when it writes the file); the text is used as written";
            remarks.warn_key(section, entry, message);
        }
    }
    section.entries = entries;
}

/// Replaces each `${NAME}` in `text` by the `@SET` variable or, failing that, the environment
/// variable; an unknown name is replaced by nothing and added to `undefined`.
fn substitute(
    text: &str,
    variables: &HashMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
    undefined: &mut Vec<String>,
) -> String {
    let mut result = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(length) = rest[start + 2..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + 2 + length];
        result.push_str(&rest[..start]);
        match variables.get(name).cloned().or_else(|| env(name)) {
            Some(value) => result.push_str(&value),
            None => undefined.push(name.to_owned()),
        }
        rest = &rest[start + 2 + length + 1..];
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn read_text(text: &str) -> (Vec<Section>, Remarks) {
        let mut remarks = Remarks::default();
        let sections = read(text, Path::new("fluent-bit.conf"), &no_env, &mut remarks)
            .expect("the text is valid");
        (sections, remarks)
    }

    fn read_error(text: &str) -> String {
        let mut remarks = Remarks::default();
        let error = read(text, Path::new("fluent-bit.conf"), &no_env, &mut remarks)
            .expect_err("the text is invalid");
        error.to_string()
    }

    #[test]
    fn reads_sections_keys_and_values_ignoring_comments_case_and_indentation() {
        let (sections, remarks) = read_text(
            "# a comment\n\n[input]\n    Name   forward\n\t# indented comment\n\tPORT 24224  \n\
             [Output]\nname loki\nLabels {job=\"a b\"} # not a comment\n",
        );
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].name, "INPUT");
        assert_eq!(sections[0].plugin(), "forward");
        assert_eq!(sections[0].entries[1].key, "PORT");
        assert!(sections[0].entries[1].is("port"));
        assert_eq!(sections[0].entries[1].value, "24224");
        assert_eq!(sections[0].entries[1].origin.line, 6);
        assert_eq!(sections[1].name, "OUTPUT");
        assert_eq!(sections[1].entries[1].value, "{job=\"a b\"} # not a comment");
        assert!(remarks.warnings.is_empty());
    }

    #[test]
    fn substitutes_set_variables_before_environment_variables() {
        let env = |name: &str| match name {
            "HOST" => Some("from-env".to_owned()),
            "PORT" => Some("3100".to_owned()),
            _ => None,
        };
        let text = "[OUTPUT]\n  Url http://${HOST}:${PORT}/${MISSING}x\n@SET HOST=from-set\n";
        let mut remarks = Remarks::default();
        let sections = read(text, Path::new("f.conf"), &env, &mut remarks).unwrap();
        assert_eq!(sections[0].entries[0].value, "http://from-set:3100/x");
        assert_eq!(remarks.warnings.len(), 1);
        assert!(remarks.warnings[0].message.contains("${MISSING}"), "{:?}", remarks.warnings);
        assert_eq!(remarks.warnings[0].line, 2);
    }

    #[test]
    fn warns_about_unrendered_templates() {
        let (_, remarks) =
            read_text("[OUTPUT]\nLabels {hostname=\"{{ env \"attr.unique.hostname\" }}\"}\n");
        assert_eq!(remarks.warnings.len(), 1);
        assert_eq!(remarks.warnings[0].key.as_deref(), Some("Labels"));
        assert!(remarks.warnings[0].message.contains("template"));
    }

    #[test]
    fn errors_name_the_file_line_and_problem() {
        assert_eq!(read_error("Name forward\n"), "fluent-bit.conf:1: a key outside any [SECTION]");
        assert_eq!(
            read_error("[INPUT]\n  Name forward\n  Port\n"),
            "fluent-bit.conf:3: key \"Port\" has no value"
        );
        assert_eq!(
            read_error("\n[INPUT\n"),
            "fluent-bit.conf:2: \"[INPUT\" is not a [SECTION] header"
        );
        assert_eq!(
            read_error("@SET novalue\n"),
            "fluent-bit.conf:1: @SET \"novalue\" is not NAME=VALUE"
        );
    }

    #[test]
    fn includes_files_relative_to_the_including_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/b-output.conf"), "[OUTPUT]\n Name loki\n").unwrap();
        std::fs::write(dir.path().join("conf.d/a-input.conf"), "[INPUT]\n Name forward\n").unwrap();
        std::fs::write(dir.path().join("conf.d/skip.txt"), "[FILTER]\n").unwrap();
        let main = dir.path().join("fluent-bit.conf");
        let text = "@INCLUDE conf.d/*.conf\n@include conf.d/none-*.conf\n";
        let mut remarks = Remarks::default();
        let sections = read(text, &main, &no_env, &mut remarks).unwrap();
        let names: Vec<_> = sections.iter().map(Section::plugin).collect();
        assert_eq!(names, ["forward", "loki"]);
        assert!(sections[0].origin.file.ends_with("conf.d/a-input.conf"));
        assert_eq!(remarks.warnings.len(), 1);
        assert!(remarks.warnings[0].message.contains("matches no file"));

        std::fs::write(dir.path().join("loop.conf"), "@INCLUDE fluent-bit.conf\n").unwrap();
        std::fs::write(&main, "@INCLUDE loop.conf\n").unwrap();
        let error = read("@INCLUDE loop.conf\n", &main, &no_env, &mut remarks).unwrap_err();
        assert!(error.to_string().contains("includes a file that is being read"), "{error}");

        let error = read("@INCLUDE missing.conf\n", &main, &no_env, &mut remarks).unwrap_err();
        assert!(error.to_string().starts_with("cannot read"), "{error}");
        assert!(error.to_string().contains("missing.conf"), "{error}");
    }

    #[test]
    fn wildcards_match_like_shell_globs() {
        assert!(wildcard_match("*.conf", "a.conf"));
        assert!(wildcard_match("out-?.conf", "out-1.conf"));
        assert!(!wildcard_match("*.conf", "a.conf.bak"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("?", ""));
    }
}
