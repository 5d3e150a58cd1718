//! What arrives on the bus and in the provisioning block: event envelopes from the log, command
//! requests (as a service decodes them), device messages, and the block an emulated board
//! reads at boot. Any bytes are an error or a value; the subjects built from a decoded id are
//! valid subjects; a provisioning block that decodes
//! re-encodes to one that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmbed_schemas::command::{
    CreateApplication, DeployApplication, RegisterDevice, StartEmulator,
};
use wasmbed_schemas::device_message::{
    DeploymentStatus, DeviceLogLine, HeartbeatReport, SessionRevoked,
};
use wasmbed_schemas::event::EventEnvelope;
use wasmbed_schemas::provisioning::Provisioning;
use wasmbed_schemas::subject;

fuzz_target!(|data: &[u8]| {
    let _ = EventEnvelope::from_json(data);
    let _ = serde_json::from_slice::<RegisterDevice>(data);
    let _ = serde_json::from_slice::<CreateApplication>(data);
    let _ = serde_json::from_slice::<DeployApplication>(data);
    let _ = serde_json::from_slice::<StartEmulator>(data);
    let _ = serde_json::from_slice::<HeartbeatReport>(data);
    let _ = serde_json::from_slice::<DeviceLogLine>(data);
    let _ = serde_json::from_slice::<DeploymentStatus>(data);
    if let Ok(revoked) = serde_json::from_slice::<SessionRevoked>(data) {
        // The gateway ends a session by the id in it; a subject built from it stays one.
        let built = subject::device_revoked(&revoked.device_id);
        assert!(subject::is_valid_subject(&built), "{built:?}");
    }
    if let Ok(register) = serde_json::from_slice::<RegisterDevice>(data) {
        for built in [
            subject::device_downlink(&register.device_id),
            subject::device_uplink(&register.device_id),
            subject::device_heartbeat(&register.device_id),
            subject::device_log(&register.device_id),
        ] {
            assert!(subject::is_valid_subject(&built), "{built:?}");
        }
    }
    if let Ok(block) = Provisioning::decode(data) {
        let bytes = block.encode().expect("a decoded block encodes");
        assert_eq!(
            Provisioning::decode(&bytes).expect("an encoded block decodes"),
            block
        );
    }
});
