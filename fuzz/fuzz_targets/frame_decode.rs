//! Device frames as the gateway reads them off TLS: any bytes decode to a frame or an error,
//! and a frame that decodes encodes back to bytes that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmbed_schemas::frame::codec;

fuzz_target!(|data: &[u8]| {
    let _ = codec::frame_len(data);
    if let Ok((frame, used)) = codec::decode(data) {
        assert!(used <= data.len());
        let bytes = codec::encode_to_vec(&frame).expect("a decoded frame encodes");
        let (again, used) = codec::decode(&bytes).expect("an encoded frame decodes");
        assert_eq!(used, bytes.len());
        assert_eq!(again, frame);
    }
});
