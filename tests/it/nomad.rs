//! The deployment files: every `nomad/*.nomad.hcl` parsed as HCL with the fields a deployment
//! depends on checked, the fwd2loki config template rendered as a node would render it and
//! loaded by the real config loader, and the Dockerfiles checked against the job's ports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fwd2loki::config::{BufferKind, Config, ListenAddr};
use hcl::expr::{HeredocStripMode, TemplateExpr};
use hcl::{Block, Body, Expression};

// ---------------------------------------------------------------------------------------------
// Reading the job files

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn parse(name: &str, text: &str) -> Body {
    hcl::parse(text).unwrap_or_else(|error| panic!("{name} is not valid HCL: {error}"))
}

/// Every `nomad/*.nomad.hcl`, by file name.
fn job_files() -> BTreeMap<String, Body> {
    let mut jobs = BTreeMap::new();
    for entry in std::fs::read_dir(repo_path("nomad")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".nomad.hcl") {
            let text = std::fs::read_to_string(&path).unwrap();
            jobs.insert(name.clone(), parse(&name, &text));
        }
    }
    jobs
}

/// The `job` block of `nomad/<file>`.
fn job(file: &str) -> Block {
    let body = parse(file, &read(&format!("nomad/{file}")));
    one(&body, "job").clone()
}

fn blocks<'a>(body: &'a Body, identifier: &str) -> Vec<&'a Block> {
    body.blocks().filter(|block| block.identifier() == identifier).collect()
}

/// The only block named `identifier` in `body`.
fn one<'a>(body: &'a Body, identifier: &str) -> &'a Block {
    match blocks(body, identifier).as_slice() {
        [block] => block,
        found => panic!("expected one `{identifier}` block, found {}", found.len()),
    }
}

fn label(block: &Block) -> &str {
    block
        .labels()
        .first()
        .unwrap_or_else(|| panic!("`{}` block without a label", block.identifier()))
        .as_str()
}

fn attribute<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|attribute| attribute.key() == key).map(|attribute| attribute.expr())
}

/// A string attribute as Nomad receives it: quoted strings and heredocs (with `<<-`
/// indentation removed). Template expressions stay raw, since Nomad keeps `${NOMAD_…}` for
/// run time.
fn string(body: &Body, key: &str) -> String {
    match attribute(body, key) {
        Some(Expression::String(text)) => text.clone(),
        Some(Expression::TemplateExpr(template)) => match template.as_ref() {
            TemplateExpr::QuotedString(text) => text.clone(),
            TemplateExpr::Heredoc(heredoc) if heredoc.strip == HeredocStripMode::Indent => {
                dedent(&heredoc.template)
            }
            TemplateExpr::Heredoc(heredoc) => heredoc.template.clone(),
        },
        other => panic!("`{key}` is not a string: {other:?}"),
    }
}

/// What HCL's `<<-` does: removes the common leading spaces of the non-blank lines.
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines().map(|line| line.get(indent..).unwrap_or("")).collect::<Vec<_>>().join("\n") + "\n"
}

fn number(body: &Body, key: &str) -> u64 {
    match attribute(body, key) {
        Some(Expression::Number(number)) => number.as_u64().unwrap(),
        other => panic!("`{key}` is not a whole number: {other:?}"),
    }
}

fn strings(body: &Body, key: &str) -> Vec<String> {
    match attribute(body, key) {
        Some(Expression::Array(items)) => items
            .iter()
            .map(|item| match item {
                Expression::String(text) => text.clone(),
                other => panic!("`{key}` holds a non-string: {other:?}"),
            })
            .collect(),
        other => panic!("`{key}` is not a list: {other:?}"),
    }
}

fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

/// Every attribute name, block name and object key in `body`, at any depth.
fn all_keys(body: &Body) -> Vec<String> {
    fn expression_keys(expression: &Expression, keys: &mut Vec<String>) {
        match expression {
            Expression::Object(object) => {
                for (key, value) in object {
                    keys.push(key.to_string());
                    expression_keys(value, keys);
                }
            }
            Expression::Array(items) => {
                for item in items {
                    expression_keys(item, keys);
                }
            }
            _ => {}
        }
    }
    fn body_keys(body: &Body, keys: &mut Vec<String>) {
        for attribute in body.attributes() {
            keys.push(attribute.key().to_owned());
            expression_keys(attribute.expr(), keys);
        }
        for block in body.blocks() {
            keys.push(block.identifier().to_owned());
            body_keys(block.body(), keys);
        }
    }
    let mut keys = Vec::new();
    body_keys(body, &mut keys);
    keys
}

/// Every block named `identifier` in `body`, at any depth.
fn all_blocks<'a>(body: &'a Body, identifier: &str) -> Vec<&'a Block> {
    let mut found = Vec::new();
    for block in body.blocks() {
        if block.identifier() == identifier {
            found.push(block);
        }
        found.extend(all_blocks(block.body(), identifier));
    }
    found
}

/// The group's ports: label to static port (0 for a dynamic one).
fn group_ports(group: &Block) -> BTreeMap<String, u64> {
    let network = one(group.body(), "network");
    blocks(network.body(), "port")
        .into_iter()
        .map(|port| {
            let value =
                attribute(port.body(), "static").map_or(0, |_| number(port.body(), "static"));
            (label(port).to_owned(), value)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Rendering Nomad templates (consul-template, i.e. Go's text/template)

/// A piece of a template: literal text, or what is inside one `{{ }}` action.
enum Piece {
    Text(String),
    Action(String),
}

/// Splits a template into text and actions, applying Go's `{{- ` and ` -}}` whitespace trims.
fn pieces(template: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let end = start + rest[start..].find("}}").expect("an unclosed {{");
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let mut action = &rest[start + 2..end];
        if let Some(trimmed) = action.strip_prefix("- ") {
            text = text.trim_end();
            action = trimmed;
        }
        trim_next = false;
        if let Some(trimmed) = action.strip_suffix(" -") {
            trim_next = true;
            action = trimmed;
        }
        pieces.push(Piece::Text(text.to_owned()));
        pieces.push(Piece::Action(action.trim().to_owned()));
        rest = &rest[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    pieces.push(Piece::Text(text.to_owned()));
    pieces
}

/// What a client node knows when it renders a template.
#[derive(Default)]
struct Node {
    /// `{{ env "…" }}` values: NOMAD_* variables and node attributes.
    env: BTreeMap<&'static str, String>,
    /// The address and port of the registered "loki" service, if there is one.
    loki: Option<(String, u64)>,
    /// The `loki_token` item of the job's Nomad variable, if the variable exists.
    loki_token: Option<String>,
}

impl Node {
    /// Whether the block opened by a `with`, `if` or `range` action is rendered.
    fn condition(&self, action: &str) -> bool {
        match action {
            "with nomadService \"loki\"" => self.loki.is_some(),
            "with index . 0" => true,
            "if nomadVarExists \"nomad/jobs/fwd2loki\"" => self.loki_token.is_some(),
            "with nomadVar \"nomad/jobs/fwd2loki\"" => true,
            other => panic!("this test cannot evaluate {{{{ {other} }}}}; teach Node about it"),
        }
    }

    /// The text an output action renders to.
    fn value(&self, action: &str) -> String {
        if let Some(name) = action.strip_prefix("env ") {
            let name = name.trim().trim_matches('"');
            return self
                .env
                .get(name)
                .unwrap_or_else(|| panic!("no value for env {name:?}; add it to Node::env"))
                .clone();
        }
        let loki = || self.loki.as_ref().expect("loki is registered here");
        match action {
            ".Address" => loki().0.clone(),
            ".Port" => loki().1.to_string(),
            ".loki_token" => self.loki_token.clone().expect("the variable exists here"),
            other => panic!("this test cannot render {{{{ {other} }}}}; teach Node about it"),
        }
    }

    /// Renders `template` the way this node would.
    fn render(&self, template: &str) -> String {
        let mut output = String::new();
        // For each open with/if/range: whether its surroundings render, and its condition.
        let mut open: Vec<(bool, bool)> = Vec::new();
        let mut active = true;
        for piece in pieces(template) {
            match piece {
                Piece::Text(text) if active => output.push_str(&text),
                Piece::Text(_) => {}
                Piece::Action(action) => match action.split_whitespace().next() {
                    Some("with" | "if" | "range") => {
                        let condition = active && self.condition(&action);
                        open.push((active, condition));
                        active = condition;
                    }
                    Some("else") => {
                        let (outer, condition) = *open.last().expect("an else outside a block");
                        active = outer && !condition;
                    }
                    Some("end") => active = open.pop().expect("an end outside a block").0,
                    _ if active => output.push_str(&self.value(&action)),
                    _ => {}
                },
            }
        }
        assert!(open.is_empty(), "a with/if/range without its end");
        output
    }
}

#[test]
fn the_template_renderer_follows_go_template_rules() {
    let node = Node {
        env: BTreeMap::from([("X", "x".to_owned())]),
        loki: Some(("10.0.0.5".to_owned(), 3100)),
        ..Node::default()
    };
    let template = concat!(
        "a = {{ env \"X\" }}\n",
        "[t]\n",
        "  {{- with nomadService \"loki\" }}{{ with index . 0 }}\n",
        "u = {{ .Address }}:{{ .Port }}\n",
        "  {{- end }}{{ else }}\n",
        "# none\n",
        "{{- end }}\n",
        "b = 1\n",
        "  {{ if nomadVarExists \"nomad/jobs/fwd2loki\" -}}  \n",
        " secret {{ .loki_token }}{{ end }}",
    );
    assert_eq!(node.render(template), "a = x\n[t]\nu = 10.0.0.5:3100\nb = 1\n  ");
    let without = Node { loki: None, loki_token: Some("s".to_owned()), ..node };
    assert_eq!(without.render(template), "a = x\n[t]\n# none\nb = 1\n  secret s");
}

// ---------------------------------------------------------------------------------------------
// Rules for every job file

#[test]
fn every_job_file_parses_and_uses_current_syntax() {
    let jobs = job_files();
    for expected in ["example-app.nomad.hcl", "fwd2loki.nomad.hcl", "loki.nomad.hcl"] {
        assert!(jobs.contains_key(expected), "nomad/{expected} is missing");
    }
    for (name, body) in &jobs {
        let job = one(body, "job");
        let keys = all_keys(job.body());
        // port_map: deprecated since Nomad 0.12 and cannot map group ports. fluentd-async-connect:
        // removed in Docker 28, which refuses to start a container that sets it.
        for old in ["port_map", "fluentd-async-connect", "mbits"] {
            assert!(!keys.iter().any(|key| key == old), "{name} uses `{old}`");
        }
        for group in blocks(job.body(), "group") {
            for task in blocks(group.body(), "task") {
                assert!(
                    all_blocks(task.body(), "network").is_empty(),
                    "{name}: task {:?} has a network block; it belongs to the group",
                    label(task)
                );
            }
        }
        for template in all_blocks(job.body(), "template") {
            let destination = string(template.body(), "destination");
            assert!(
                destination.starts_with("local/") || destination.starts_with("secrets/"),
                "{name}: template destination {destination:?}"
            );
            let data = string(template.body(), "data");
            assert!(!data.trim().is_empty(), "{name}: {destination} has no data");
            // HCL would interpolate these before the template engine sees the text.
            assert!(
                !data.contains("${") && !data.contains("%{"),
                "{name}: {destination} holds an HCL interpolation"
            );
        }
        for logging in all_blocks(job.body(), "logging") {
            for config in blocks(logging.body(), "config") {
                for attribute in config.body().attributes() {
                    assert!(
                        matches!(
                            attribute.expr(),
                            Expression::String(_) | Expression::TemplateExpr(_)
                        ),
                        "{name}: logging option {} must be a string",
                        attribute.key()
                    );
                }
            }
        }
    }
}

#[test]
fn the_syntax_checks_see_nested_keys() {
    // The checks above would pass vacuously if the walk missed what it looks for.
    let old = parse(
        "old syntax",
        r#"job "x" {
             group "g" {
               task "t" {
                 config {
                   port_map { forward = 24224 }
                   logging {
                     config {
                       fluentd-async-connect = "true"
                     }
                   }
                 }
                 resources {
                   network {
                     port "forward" { static = 24224 }
                   }
                 }
               }
             }
           }"#,
    );
    let job = one(&old, "job");
    let keys = all_keys(job.body());
    assert!(keys.iter().any(|key| key == "port_map"), "{keys:?}");
    assert!(keys.iter().any(|key| key == "fluentd-async-connect"));
    let task = one(one(job.body(), "group").body(), "task");
    assert_eq!(all_blocks(task.body(), "network").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// The fwd2loki system job

const HOSTNAME: &str = "node-1";
const LOKI_ADDRESS: &str = "10.0.0.5";

struct Shipper {
    group: Block,
    task: Block,
    ports: BTreeMap<String, u64>,
}

fn shipper() -> Shipper {
    let job = job("fwd2loki.nomad.hcl");
    let group = one(job.body(), "group").clone();
    let task = one(group.body(), "task").clone();
    let ports = group_ports(&group);
    Shipper { group, task, ports }
}

fn template_to(task: &Block, destination: &str) -> Block {
    blocks(task.body(), "template")
        .into_iter()
        .find(|template| string(template.body(), "destination") == destination)
        .unwrap_or_else(|| panic!("no template renders {destination}"))
        .clone()
}

/// A client node of this job: the env values Nomad gives the template.
fn shipper_node(shipper: &Shipper, loki: Option<u64>) -> Node {
    Node {
        env: BTreeMap::from([
            ("attr.unique.hostname", HOSTNAME.to_owned()),
            ("NOMAD_PORT_forward", shipper.ports["forward"].to_string()),
            ("NOMAD_PORT_http", shipper.ports["http"].to_string()),
            ("NOMAD_ALLOC_DIR", "/alloc".to_owned()),
        ]),
        loki: loki.map(|port| (LOKI_ADDRESS.to_owned(), port)),
        loki_token: None,
    }
}

/// Loads a rendered config with the real loader.
fn load(rendered: &str) -> Config {
    match Config::from_toml(rendered) {
        Ok(config) => config,
        Err(error) => {
            // A fwd2loki without the [server] section (the address of /health, /ready and
            // /metrics, which the job's check needs) refuses it. Then that one section is
            // taken out, and everything else must load.
            let message = error.to_string();
            assert!(
                message.contains("unknown field `server`"),
                "the rendered config is refused: {message}\n{rendered}"
            );
            let without = without_section(rendered, "server");
            assert_ne!(without, rendered);
            Config::from_toml(&without).unwrap_or_else(|error| {
                panic!("the rendered config is refused: {error}\n{without}")
            })
        }
    }
}

/// `toml` with the commented-out table `# [name]` and the commented lines right after it
/// uncommented.
fn uncommented(toml: &str, name: &str) -> String {
    let header = format!("# [{name}]");
    let mut inside = false;
    let mut found = false;
    let mut lines = Vec::new();
    for line in toml.lines() {
        if line.trim() == header {
            inside = true;
            found = true;
        } else if !line.trim_start().starts_with('#') {
            inside = false;
        }
        lines.push(if inside { line.trim_start().trim_start_matches("# ") } else { line });
    }
    assert!(found, "no {header} in\n{toml}");
    lines.join("\n") + "\n"
}

/// `toml` without the table `[name]` (up to the next table header).
fn without_section(toml: &str, name: &str) -> String {
    let header = format!("[{name}]");
    let mut inside = false;
    let mut kept = String::new();
    for line in toml.lines() {
        if line.trim_start().starts_with('[') {
            inside = line.trim() == header;
        }
        if !inside {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

#[test]
fn fwd2loki_runs_on_every_node_with_static_host_ports() {
    let job = job("fwd2loki.nomad.hcl");
    assert_eq!(label(&job), "fwd2loki");
    assert_eq!(string(job.body(), "type"), "system");
    assert_eq!(string(job.body(), "node_pool"), "all");
    assert_eq!(strings(job.body(), "datacenters"), ["*"]);

    let shipper = shipper();
    let network = one(shipper.group.body(), "network");
    assert_eq!(string(network.body(), "mode"), "host");
    assert_eq!(
        shipper.ports,
        BTreeMap::from([("forward".to_owned(), 24224), ("http".to_owned(), 24231)])
    );

    let restart = one(shipper.group.body(), "restart");
    assert_eq!(string(restart.body(), "mode"), "delay");
    assert_eq!(number(restart.body(), "attempts"), 10);

    assert_eq!(string(shipper.task.body(), "driver"), "docker");
    let config = one(shipper.task.body(), "config");
    assert_eq!(string(config.body(), "network_mode"), "host");
    assert_eq!(strings(config.body(), "ports"), ["forward", "http"]);
    // Never the fluentd driver for the shipper itself.
    let logging = one(config.body(), "logging");
    assert_eq!(string(logging.body(), "type"), "json-file");

    // The config the task is started with is the file the template writes.
    let args = strings(config.body(), "args");
    let config_flag = args.iter().position(|arg| arg == "--config").unwrap();
    let path = &args[config_flag + 1];
    assert_eq!(path.strip_prefix('/'), Some("local/fwd2loki.toml"));
    template_to(&shipper.task, "local/fwd2loki.toml");

    let env = one(shipper.task.body(), "env");
    assert_eq!(string(env.body(), "FWD2LOKI_LOG_FORMAT"), "json");

    let service = one(shipper.task.body(), "service");
    assert_eq!(string(service.body(), "provider"), "nomad");
    let port = string(service.body(), "port");
    assert!(shipper.ports.contains_key(&port), "service port {port:?}");
    let check = one(service.body(), "check");
    assert_eq!(string(check.body(), "type"), "http");
    assert_eq!(string(check.body(), "path"), "/health");
    assert!(
        duration(&string(check.body(), "timeout")) < duration(&string(check.body(), "interval"))
    );
}

#[test]
fn fwd2loki_config_template_renders_a_config_the_binary_accepts() {
    let shipper = shipper();
    let template = string(template_to(&shipper.task, "local/fwd2loki.toml").body(), "data");
    assert!(template.contains("{{ env \"attr.unique.hostname\" }}"));
    let loki_port = group_ports(one(job("loki.nomad.hcl").body(), "group"))["http"];

    // A node where Loki is registered.
    let rendered = shipper_node(&shipper, Some(loki_port)).render(&template);
    let config = load(&rendered);
    assert_eq!(
        config.loki.url.as_deref(),
        Some(format!("http://{LOKI_ADDRESS}:{loki_port}/loki/api/v1/push").as_str())
    );
    assert_eq!(
        config.input.listen,
        [ListenAddr::Tcp(format!("0.0.0.0:{}", shipper.ports["forward"]))]
    );
    assert_eq!(config.loki.labels["hostname"], HOSTNAME);
    assert_eq!(config.loki.labels["job"], "fluent-bit");
    assert!(rendered.contains(&format!("0.0.0.0:{}", shipper.ports["http"])));

    // Shutdown delivery must end before the kill.
    let kill_timeout = duration(&string(shipper.task.body(), "kill_timeout"));
    assert!(
        config.shutdown_timeout < kill_timeout,
        "shutdown_timeout {:?} is not below kill_timeout {kill_timeout:?}",
        config.shutdown_timeout
    );

    // The commented disk buffer is a working alternative.
    let config = load(&uncommented(&rendered, "buffer"));
    assert_eq!(config.buffer.kind, BufferKind::Disk);
    assert_eq!(config.buffer.path.as_deref(), Some(Path::new("/alloc/data/buffer")));

    // A node where Loki is not registered (yet): still a valid config, printing to stdout.
    let rendered = shipper_node(&shipper, None).render(&template);
    let config = load(&rendered);
    assert_eq!(config.loki.url, None);
    assert_eq!(config.loki.labels["hostname"], HOSTNAME);
}

#[test]
fn fwd2loki_token_template_writes_the_nomad_variable_and_is_not_restarted() {
    let shipper = shipper();
    let token = template_to(&shipper.task, "secrets/loki-token");
    assert_eq!(string(token.body(), "change_mode"), "noop");
    // Readable by the image's user (nobody) and nobody else.
    assert_eq!(number(token.body(), "uid"), 65534);
    assert_eq!(string(token.body(), "perms"), "0400");

    let data = string(token.body(), "data");
    let mut node = shipper_node(&shipper, None);
    assert_eq!(node.render(&data), "");
    node.loki_token = Some("s3cr3t".to_owned());
    assert_eq!(node.render(&data), "s3cr3t");
}

// ---------------------------------------------------------------------------------------------
// Loki and the example application

#[test]
fn loki_registers_the_service_fwd2loki_looks_up_with_a_ready_check() {
    let job = job("loki.nomad.hcl");
    assert_eq!(string(job.body(), "type"), "service");
    let group = one(job.body(), "group");
    assert_eq!(group_ports(group)["http"], 3100);
    let task = one(group.body(), "task");
    assert_eq!(string(task.body(), "driver"), "docker");
    let image = string(one(task.body(), "config").body(), "image");
    assert!(image.starts_with("grafana/loki:3."), "{image}");

    let service = one(task.body(), "service");
    let name = string(service.body(), "name");
    assert_eq!(name, "loki");
    let shipper_template =
        string(template_to(&shipper().task, "local/fwd2loki.toml").body(), "data");
    assert!(shipper_template.contains(&format!("nomadService \"{name}\"")));
    assert_eq!(string(service.body(), "provider"), "nomad");
    let check = one(service.body(), "check");
    assert_eq!(string(check.body(), "type"), "http");
    assert_eq!(string(check.body(), "path"), "/ready");

    let config_path = strings(one(task.body(), "config").body(), "args")
        .into_iter()
        .find_map(|arg| arg.strip_prefix("-config.file=/").map(str::to_owned))
        .expect("loki is given -config.file");
    let template = template_to(task, &config_path);
    let node = Node {
        env: BTreeMap::from([
            ("NOMAD_PORT_http", "3100".to_owned()),
            ("NOMAD_ALLOC_DIR", "/alloc".to_owned()),
        ]),
        ..Node::default()
    };
    let rendered = node.render(&string(template.body(), "data"));
    for line in [
        "auth_enabled: false",
        "http_listen_port: 3100",
        "path_prefix: /alloc/data/loki",
        "store: tsdb",
        "schema: v13",
        "allow_structured_metadata: true",
        "retention_enabled: true",
    ] {
        assert!(
            rendered.lines().any(|rendered| rendered.trim() == line),
            "{line:?} is not in the Loki config:\n{rendered}"
        );
    }
}

#[test]
fn example_app_logs_to_the_node_local_fwd2loki_with_stable_names() {
    let job = job("example-app.nomad.hcl");
    let group = one(job.body(), "group");
    one(group.body(), "network");
    let task = one(group.body(), "task");
    let logging = one(one(task.body(), "config").body(), "logging");
    assert_eq!(string(logging.body(), "type"), "fluentd");
    let options = one(logging.body(), "config").body();

    let address = string(options, "fluentd-address");
    let shipper = shipper();
    assert_eq!(address, format!("127.0.0.1:{}", shipper.ports["forward"]));
    assert_eq!(string(options, "fluentd-async"), "true");
    assert_eq!(string(options, "fluentd-sub-second-precision"), "true");
    assert_eq!(string(options, "tag"), "${NOMAD_JOB_NAME}.${NOMAD_TASK_NAME}");

    // The Docker labels copied into each record are keys fwd2loki turns into labels.
    let template = string(template_to(&shipper.task, "local/fwd2loki.toml").body(), "data");
    let config = load(&shipper_node(&shipper, Some(3100)).render(&template));
    let copied = string(options, "labels");
    for key in copied.split(',') {
        assert!(
            config.loki.label_keys.iter().any(|label_key| label_key == key),
            "{key} is copied into records but is not in label_keys {:?}",
            config.loki.label_keys
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The image

/// The instructions of a Dockerfile's last stage from USER on, continuation lines joined.
fn runtime_instructions(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let last_stage = joined.rsplit_once("\nFROM ").map_or(joined.as_str(), |(_, stage)| stage);
    last_stage
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .skip_while(|line| !line.starts_with("USER "))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn both_dockerfiles_build_the_image_the_job_expects() {
    let release = runtime_instructions(&read("Dockerfile"));
    let local = runtime_instructions(&read("Dockerfile.local"));
    assert_eq!(release, local, "Dockerfile and Dockerfile.local differ");

    let shipper = shipper();
    let (forward, http) = (shipper.ports["forward"], shipper.ports["http"]);
    assert!(release.contains(&"USER 65534:65534".to_owned()), "{release:?}");
    assert!(release.contains(&format!("EXPOSE {forward} {http}")), "{release:?}");
    assert!(release.contains(&"ENTRYPOINT [\"/fwd2loki\"]".to_owned()));
    let healthcheck =
        release.iter().find(|line| line.starts_with("HEALTHCHECK ")).expect("a HEALTHCHECK");
    assert!(healthcheck.contains(&format!("http://127.0.0.1:{http}/health")), "{healthcheck}");

    let image = string(one(shipper.task.body(), "config").body(), "image");
    assert_eq!(image, format!("fwd2loki:{}", env!("CARGO_PKG_VERSION")));
}
