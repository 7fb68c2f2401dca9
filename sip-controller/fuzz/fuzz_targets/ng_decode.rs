//! Arbitrary bytes as an NG message (`<cookie> <bencode or JSON dictionary>`): the decoder
//! never panics; whatever decodes re-encodes (as the reply writer does, same cookie and
//! encoding) to bytes that decode to the same value (dictionary keys sorted); the stream
//! framer agrees on where the message ends; and the request parser refuses or accepts the
//! body without panicking.
#![no_main]

use sip_controller::ng::{
    message::{encode_reply, frame_len, parse_message},
    options::parse_request,
};

/// Large enough for any input libFuzzer produces by default.
const MAX: usize = 1 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(message) = parse_message(data, MAX) else {
        return;
    };
    let encoded = encode_reply(message.cookie, message.encoding, &message.body);
    let again = parse_message(&encoded, MAX).expect("a re-encoded message decodes");
    assert_eq!(again.cookie, message.cookie);
    assert_eq!(again.encoding, message.encoding);
    assert_eq!(again.body, message.body.canonical());
    assert_eq!(
        encode_reply(again.cookie, again.encoding, &again.body),
        encoded,
        "encoding is stable"
    );

    let frame = frame_len(data, MAX).expect("a decodable message frames");
    let frame = frame.expect("a complete message is complete on a stream");
    assert!(frame <= data.len());
    assert!(parse_message(&data[..frame], MAX).is_ok());

    let _ = parse_request(&message.body);
});
