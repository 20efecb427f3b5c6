//! The `forward` inputs: where fwd2loki listens and how large a request may be.

use super::classic::{Entry, Section};
use super::keys::{Keys, Rule};
use super::remarks::Remarks;
use super::{FluentBitError, Target, invalid_value, values};

/// fluent-bit's defaults for `Listen` and `Port`.
const DEFAULT_LISTEN: &str = "0.0.0.0";
const DEFAULT_PORT: &str = "24224";

const RULES: &[Rule] = &[
    Rule::note(
        "buffer_chunk_size",
        "fwd2loki sizes its reads itself; only Buffer_Max_Size limits a request",
    ),
    Rule::warn(
        "shared_key",
        "not honoured yet: fwd2loki does not do the forward protocol's handshake, so clients \
         must connect without a shared key",
    ),
    Rule::warn(
        "self_hostname",
        "not honoured yet: it belongs to the handshake, which fwd2loki does not do",
    ),
    Rule::warn(
        "security.users",
        "not honoured yet: fwd2loki does not do the forward protocol's handshake",
    ),
    Rule::warn(
        "tls*",
        "not honoured yet: fwd2loki receives plain TCP and Unix sockets; keep the listener on a \
         trusted network or use a Unix socket",
    ),
    Rule::warn("unix_perm", "not honoured: the socket gets the permissions of fwd2loki's umask"),
    Rule::note("tag", "tags are not used: every record goes to the one Loki output"),
    Rule::note("tag_prefix", "tags are not used: every record goes to the one Loki output"),
    Rule::note("threaded", "fwd2loki serves each connection on its own task anyway"),
    Rule::note("alias", "names fluent-bit's metrics, which fwd2loki does not reproduce"),
    Rule::note("log_level", "a per-plugin log level; fwd2loki has one level, log.level"),
    Rule::warn(
        "mem_buf_limit",
        "not converted: fwd2loki bounds what it holds with [buffer] max_bytes",
    ),
    Rule::warn(
        "storage.*",
        "fluent-bit's filesystem buffering is not converted: set [buffer] type = \"disk\" and a \
         path for fwd2loki's own disk buffer",
    ),
    Rule::note("net.*", "connection tuning that fwd2loki does not need"),
];

/// Converts the `forward` inputs: fwd2loki listens on the address of each, and accepts requests
/// as large as the largest `Buffer_Max_Size` among them.
pub(super) fn convert(
    sections: &[&Section],
    target: &mut Target,
    remarks: &mut Remarks,
) -> Result<(), FluentBitError> {
    let mut listen = Vec::new();
    let mut max_message_bytes = None;
    for section in sections {
        let mut keys = Keys::new(section);
        keys.take("name");
        listen.push(listen_address(&mut keys, remarks)?);
        if let Some(entry) = keys.take("buffer_max_size") {
            let bytes = values::size(&entry.value)
                .map_err(|problem| invalid_value(section, entry, problem))?;
            max_message_bytes = max_message_bytes.max(Some(bytes));
        }
        let unknown = |_: &Entry| "not a key of the forward input fwd2loki knows; ignored".into();
        keys.finish(&[RULES], &unknown, remarks);
    }

    target.set("input", "listen", listen);
    if let Some(bytes) = max_message_bytes {
        target.set_bytes("input", "max_message_bytes", bytes);
    }
    Ok(())
}

/// The `input.listen` address: `Unix_Path` alone when it is set, as fluent-bit then opens no
/// TCP port; otherwise `Listen` and `Port`.
fn listen_address(keys: &mut Keys<'_>, remarks: &mut Remarks) -> Result<String, FluentBitError> {
    let section = keys.section();
    let listen = keys.take("listen");
    let port = keys.take("port");
    if let Some(unix_path) = keys.take("unix_path") {
        for unused in [listen, port].into_iter().flatten() {
            remarks.note_key(section, unused, "not used with Unix_Path, as in fluent-bit");
        }
        return Ok(format!("unix:{}", unix_path.value));
    }
    let host = listen.map_or(DEFAULT_LISTEN, |entry| entry.value.as_str());
    let port = match port {
        Some(entry) => port_number(section, entry)?,
        None => DEFAULT_PORT,
    };
    // An IPv6 address needs brackets to be told from its port.
    if host.contains(':') && !host.starts_with('[') {
        Ok(format!("[{host}]:{port}"))
    } else {
        Ok(format!("{host}:{port}"))
    }
}

fn port_number<'a>(section: &Section, entry: &'a Entry) -> Result<&'a str, FluentBitError> {
    match entry.value.parse::<u16>() {
        Ok(_) => Ok(&entry.value),
        Err(_) => Err(invalid_value(section, entry, format!("{:?} is not a port", entry.value))),
    }
}
