//! Device frames as the gateway reads them off TLS: any bytes decode to a frame or an error,
//! and a frame that decodes encodes back to bytes that decode to the same frame. Every string
//! of a decoded frame that reaches NATS goes through the gateway's own code for it: the
//! telemetry headers are built (async-nats asserts on what a header may not hold) or refused,
//! and the subjects built from a frame's ids are valid subjects.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmbed_schemas::frame::{Frame, codec};
use wasmbed_schemas::{DeviceId, subject};

fuzz_target!(|data: &[u8]| {
    let _ = codec::frame_len(data);
    if let Ok((frame, used)) = codec::decode(data) {
        assert!(used <= data.len());
        let bytes = codec::encode_to_vec(&frame).expect("a decoded frame encodes");
        let (again, used) = codec::decode(&bytes).expect("an encoded frame decodes");
        assert_eq!(used, bytes.len());
        assert_eq!(again, frame);
        to_the_bus(&frame);
    }
});

/// What the gateway does with a frame's strings on the way to NATS.
fn to_the_bus(frame: &Frame) {
    let device = DeviceId::new("fuzz-device").expect("a valid id");
    let app = match frame {
        Frame::Telemetry(t) => {
            // Built or refused, never a panic.
            let _ = wasmbed_gateway::telemetry_headers(&device, t);
            Some(&t.app_id)
        }
        Frame::AppStatus(s) => Some(&s.app_id),
        Frame::ModuleAck(a) => Some(&a.app_id),
        Frame::Log(l) => l.app_id.as_ref(),
        _ => None,
    };
    if let Some(app) = app {
        let built = subject::telemetry(&device, app);
        assert!(subject::is_valid_subject(&built), "{built:?}");
    }
}
