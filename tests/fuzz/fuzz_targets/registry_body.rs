//! The schema registry's request bodies: body → schema text → apache-avro
//! → compatibility against K2's own schemas, as a register or
//! compatibility request takes them; config bodies, subject names and ids.

#![no_main]

use k2_core::registry_wire::{Compatibility, check_subject, config_body, parse_schema, schema_body, schema_id};
use k2_core::schema::{QUOTE_V2_AVSC, TRADE_V2_AVSC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = config_body(data);
    let text = std::str::from_utf8(data).ok();
    if let Some(text) = text {
        let _ = check_subject(text);
        let _ = schema_id(text);
        let _ = Compatibility::parse(text);
    }
    // The schema in a body, or the input itself as schema text: mutations
    // inside a JSON string body rarely stay well-formed, so apache-avro also
    // gets the text straight.
    let schema = match schema_body(data) {
        Ok(schema) => schema,
        Err(_) => match text {
            Some(text) => text.to_owned(),
            None => return,
        },
    };
    k2_fuzz::on_worker_stack(|| {
        let Ok(parsed) = parse_schema(&schema) else {
            return;
        };
        // Registering keys schemas by their canonical form.
        let _ = parsed.canonical_form();
        for old in [TRADE_V2_AVSC, QUOTE_V2_AVSC] {
            let _ = Compatibility::Full.check(old, &schema);
        }
        let _ = Compatibility::Full.check(&schema, &schema);
    });
});
