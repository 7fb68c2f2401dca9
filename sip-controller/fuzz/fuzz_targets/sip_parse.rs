//! Arbitrary bytes through the SIP codec: parsing never panics, a parsed message encodes to
//! bytes that parse to an equal message (and to exactly the predicted length), stream framing
//! agrees with the datagram parser, and a rejected message gets a well-formed answer or none.
#![no_main]

use sip_controller::sip::{bad_request_response, stream_frame, Message, StreamFrame};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match Message::parse(data) {
        Ok(message) => {
            let encoded = message.to_bytes();
            assert_eq!(encoded.len(), message.encoded_len());
            let again = Message::parse(&encoded).expect("an encoded message parses again");
            assert_eq!(again, message);
            // The encoded form is also one complete stream frame.
            assert_eq!(
                stream_frame(&encoded),
                Ok(StreamFrame::Message { len: encoded.len() })
            );
        }
        Err(err) => {
            assert!(!err.reason().contains(['\r', '\n']));
            if let Some(answer) = bad_request_response(data, &err) {
                assert!(answer.starts_with(b"SIP/2.0 "));
                assert!(answer.ends_with(b"\r\nContent-Length: 0\r\n\r\n"));
            }
        }
    }
    // Framing must not panic on any prefix of a stream either.
    if let Ok(StreamFrame::Message { len }) = stream_frame(data) {
        assert!(len <= data.len());
    }
});
