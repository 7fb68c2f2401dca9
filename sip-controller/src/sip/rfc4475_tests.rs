//! RFC 4475 "SIP Torture Test Messages" against the codec: the valid messages of §3.1.1 (and
//! §3.3's `inv2543`) must parse to the values the RFC describes and survive an encode/parse round
//! trip; the invalid ones of §3.1.2 (and §3.3's `insuf`) must be rejected with the matching
//! error, and requests among them answered by [`bad_request_response`] when they can be.
//!
//! The messages are the RFC's, written with LF and sent with CRLF. Deliberate deviation:
//! `intmeth` carries a NUL byte inside a quoted-pair in its To display name; this codec rejects
//! every NUL in the header section (a B2BUA must not forward it to C-string peers), so the test
//! checks that rejection and then parses the message with that one quoted-pair removed.

use super::{
    bad_request_response, Contact, DisplayName, HeaderError, Host, Message, Method, ParseError,
    Request, Response, Rport, Transport, UriError,
};

/// The RFC's text with each LF made CRLF, as on the wire.
fn wire(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

/// The SDP body most torture messages carry, for the given address.
fn sdp(addr: &str) -> String {
    format!(
        "v=0\no=mhandley 29739 7272939 IN IP4 {addr}\ns=-\nc=IN IP4 {addr}\nt=0 0\n\
m=audio 49217 RTP/AVP 0 12\nm=video 3227 RTP/AVP 31\na=rtpmap:31 LPC\n"
    )
}

fn request(bytes: &[u8]) -> Request {
    match Message::parse(bytes) {
        Ok(Message::Request(r)) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

fn response(bytes: &[u8]) -> Response {
    match Message::parse(bytes) {
        Ok(Message::Response(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

/// Encoding a parsed message and parsing it again gives the same message.
fn assert_round_trip(bytes: &[u8]) {
    let first = Message::parse(bytes).unwrap();
    let again = Message::parse(&first.to_bytes()).unwrap();
    assert_eq!(first, again);
}

/// Rejected with `expected`; a request is answered with `status` (or dropped with `None`).
fn assert_rejected(bytes: &[u8], expected: &ParseError, status: Option<u16>) {
    let err = Message::parse(bytes).unwrap_err();
    assert_eq!(&err, expected);
    let answer = bad_request_response(bytes, &err);
    match status {
        None => assert_eq!(answer, None),
        Some(code) => {
            // The raw lines are echoed, so the answer is checked as text: it may carry the very
            // field that made the request invalid.
            let answer = String::from_utf8(answer.expect("an answer")).unwrap();
            let reason = err.reason();
            assert!(
                answer.starts_with(&format!("SIP/2.0 {code} {reason}\r\n")),
                "{answer}"
            );
            assert!(answer.ends_with("\r\nContent-Length: 0\r\n\r\n"));
            for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
                assert!(
                    answer.split("\r\n").any(|l| l
                        .split_once(':')
                        .is_some_and(|(n, _)| super::headers::names_match(n.trim(), name))),
                    "{name} missing in {answer}"
                );
            }
        }
    }
}

#[test]
fn s3_1_1_1_wsinv_short_tortuous_invite() {
    let text = format!(
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

{}",
        sdp("192.0.2.3").replace("c=IN IP4 192.0.2.3", "c=IN IP4 192.0.2.4")
    );
    let bytes = wire(&text);
    let r = request(&bytes);
    assert_eq!(r.method, Method::Invite);
    assert!(r.uri.param("unknownparam").is_some());
    let h = &r.headers;
    assert_eq!(h.to().unwrap().tag(), Some("1918181833n"));
    let from = h.from().unwrap();
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(from.display_name().unwrap().text(), "J Rosenberg \\\"");
    assert_eq!(h.max_forwards(), Ok(Some(68)));
    assert_eq!(h.cseq().unwrap().seq, 9);
    assert_eq!(h.get("Subject"), Some(""));
    assert_eq!(
        h.get("newfangledheader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(h.values("UnknownHeaderWithUnusualValue"), [";;,,;;,;"]);
    let vias = h.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].branch(), Some("390skdjuw"));
    assert_eq!(vias[1].transport(), &Transport::Tcp);
    assert_eq!(vias[1].host(), &Host::Domain("spindle.example.com".into()));
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    let route = &h.routes().unwrap()[0];
    assert!(route.uri().param("lr").is_some());
    assert!(route.uri().param("unknown-no-value").is_some());
    let contacts = h.contacts().unwrap();
    let [Contact::Address(contact)] = contacts.as_slice() else {
        panic!("one contact")
    };
    assert_eq!(contact.q(), Some("0.33"));
    assert_eq!(
        contact.param("newparam").and_then(|p| p.value()),
        Some("newvalue")
    );
    assert!(contact.param("secondparam").is_some());
    assert_eq!(r.body.len(), 150);
    assert_round_trip(&bytes);
}

fn intmeth(to_display: &[u8]) -> Vec<u8> {
    let mut out = wire(
        "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: ",
    );
    out.extend_from_slice(to_display);
    out.extend_from_slice(&wire(
        " <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\u{feff}\u{5927}\u{505c}\u{96fb}
Content-Length: 0

",
    ));
    out
}

#[test]
fn s3_1_1_2_intmeth_wide_range_of_valid_characters() {
    // The RFC's message, with its NUL quoted-pair: rejected on purpose (see the module doc).
    let verbatim = intmeth(b"\"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7F\"");
    // Its To line cannot be echoed, so it is not answered.
    assert_rejected(&verbatim, &ParseError::NulByte { line: 3 }, None);

    let bytes = intmeth(b"\"BEL:\\\x07 DEL:\\\x7F\"");
    let r = request(&bytes);
    let method = Method::from_token("!interesting-Method0123456789_*+`.%indeed'~").unwrap();
    assert_eq!(r.method, method);
    assert_eq!(
        r.uri.user(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        r.uri.as_sip().unwrap().password(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    let h = &r.headers;
    assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
    assert_eq!(
        h.to().unwrap().display_name(),
        Some(&DisplayName::Quoted("BEL:\\\u{7} DEL:\\\u{7f}".into()))
    );
    let from = h.from().unwrap();
    assert_eq!(
        from.display_name(),
        Some(&DisplayName::Tokens(
            "token1~` token2'+_ token3*%!.-".into()
        ))
    );
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        from.param("fromParam''~+*_!.-%")
            .and_then(super::Param::unquoted_value)
            .as_deref(),
        Some("\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}")
    );
    assert_eq!(
        h.call_id(),
        Ok("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
    );
    assert_eq!(h.cseq().unwrap().method, method);
    assert_eq!(h.max_forwards(), Ok(Some(255)));
    assert_eq!(
        h.get("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}\u{5927}\u{505c}\u{96fb}")
    );
    assert_round_trip(&bytes);
}

#[test]
fn s3_1_1_3_esc01_valid_use_of_percent_escaping() {
    let bytes = wire(&format!(
        "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 150

{}",
        sdp("192.0.2.1")
    ));
    let r = request(&bytes);
    // Escapes are kept verbatim: the Request-URI is not a sips: URI.
    assert!(!r.uri.is_sips());
    assert_eq!(r.uri.user(), Some("sips%3Auser%40example.com"));
    assert_eq!(r.headers.to().unwrap().uri().user(), Some("%75se%72"));
    assert_eq!(
        r.headers.from().unwrap().uri().user(),
        Some("I%20have%20spaces")
    );
    let contacts = r.headers.contacts().unwrap();
    let [Contact::Address(c)] = contacts.as_slice() else {
        panic!("one contact")
    };
    assert_eq!(
        c.uri().to_string(),
        "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"
    );
    assert!(r.headers.content_type().unwrap().unwrap().is_sdp());
    assert_round_trip(&bytes);
}

#[test]
fn s3_1_1_4_escnull_escaped_nulls_in_uris() {
    let bytes = wire(
        "REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

",
    );
    let r = request(&bytes);
    assert_eq!(r.headers.to().unwrap().uri().user(), Some("null-%00-null"));
    assert_eq!(r.headers.contacts().unwrap().len(), 2);
    assert_round_trip(&bytes);
}

#[test]
fn s3_1_1_5_esc02_percent_that_is_not_an_escape() {
    let bytes = wire(
        "RE%47IST%45R sip:registrar.example.com SIP/2.0
To: \"%Z%45\" <sip:resource@example.com>
From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

",
    );
    let r = request(&bytes);
    // Not REGISTER: an extension method that happens to contain %.
    assert_eq!(r.method, Method::Extension("RE%47IST%45R".into()));
    assert_eq!(r.headers.contacts().unwrap().len(), 2);
    assert_eq!(
        r.headers.get("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
    assert_round_trip(&bytes);
}

#[test]
fn s3_1_1_6_lwsdisp_no_lws_between_display_name_and_angle() {
    let bytes = wire(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

",
    );
    let from = request(&bytes).headers.from().unwrap();
    assert_eq!(
        from.display_name(),
        Some(&DisplayName::Tokens("caller".into()))
    );
    assert_eq!(from.tag(), Some("323"));
    assert_round_trip(&bytes);
}

#[test]
fn s3_1_1_7_longreq_long_values_in_header_fields() {
    let user_name = "extreme".repeat(10);
    let caller = "amazinglylongcallername".repeat(5);
    let branch = "long".repeat(50);
    let mut vias: Vec<String> = [
        "Via", "v", "V", "Via", "ViA", "VIa", "VIA", "via", "viA", "vIa", "vIA", "V ", "v ", "V  ",
        "v  ", "Via ", "Via  ",
    ]
    .iter()
    .enumerate()
    .map(|(i, name)| format!("{name}: SIP/2.0/TCP sip{}.example.com", 33 - i))
    .collect();
    vias.extend(
        (1..=16)
            .rev()
            .map(|i| format!("Via: SIP/2.0/TCP sip{i}.example.com")),
    );
    let text = format!(
        "INVITE sip:user@example.com SIP/2.0
To: \"I have a user name of {user_name} proportion\" <sip:user@example.com:6000;unknownparam1=very{long}value;longparam{names}=shortvalue;very{long_param}ParameterNameWithNoValue>
F: sip:{caller}@example.net;tag=12{tag}424;unknownheaderparam{hnames}=unknowheaderparam{hvalues};unknownValueless{valueless}
Call-ID: longreq.one{really}longcallid
CSeq: 3882340 INVITE
Unknown-{lname}-Name: unknown-{lvalue}-value;unknown-{lvalue}-parameter-name=unknown-{lvalue}-parameter-value
{vias}
Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=very{branch}branchvalue
Max-Forwards: 70
Contact: <sip:{caller}@host5.example.net>
Content-Type: application/sdp
l: 150

{sdp}",
        long = "long".repeat(20),
        names = "name".repeat(25),
        long_param = "long".repeat(25),
        tag = "982".repeat(50),
        hnames = "name".repeat(20),
        hvalues = "value".repeat(15),
        valueless = "paramname".repeat(10),
        really = "really".repeat(20),
        lname = "Long".repeat(20),
        lvalue = "long".repeat(20),
        vias = vias.join("\n"),
        sdp = sdp("192.0.2.1"),
    );
    let bytes = wire(&text);
    let r = request(&bytes);
    let vias = r.headers.vias().unwrap();
    assert_eq!(vias.len(), 34);
    assert_eq!(vias[0].host(), &Host::Domain("sip33.example.com".into()));
    assert_eq!(
        vias[33].branch(),
        Some(format!("very{branch}branchvalue").as_str())
    );
    let to = r.headers.to().unwrap();
    assert_eq!(to.uri().port(), Some(6000));
    assert_eq!(to.uri().as_sip().unwrap().params().len(), 3);
    assert_eq!(
        r.headers.from().unwrap().tag(),
        Some(format!("12{}424", "982".repeat(50)).as_str())
    );
    assert_eq!(r.body.len(), 150);
    assert_round_trip(&bytes);
}

#[test]
fn s3_1_1_8_dblreq_extra_trailing_octets_in_a_datagram() {
    let bytes = wire(&format!(
        "REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0

INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150

{}",
        sdp("192.0.2.15")
    ));
    // The REGISTER is the message; the INVITE after it is discarded (RFC 3261 §18.3).
    let r = request(&bytes);
    assert_eq!(r.method, Method::Register);
    assert!(r.body.is_empty());
    assert_eq!(
        r.headers.call_id(),
        Ok("dblreq.0ha0isndaksdj99sdfafnl3lk233412")
    );
}

#[test]
fn s3_1_1_9_semiuri_semicolon_separated_parameters_in_user_part() {
    let bytes = wire(
        "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

",
    );
    let r = request(&bytes);
    assert_eq!(r.uri.user(), Some("user;par=u%40example.net"));
    assert_eq!(r.uri.host(), Some(&Host::Domain("example.com".into())));
    assert_eq!(r.headers.values("Accept").len(), 6);
    assert_round_trip(&bytes);
}

#[test]
fn s3_1_1_10_transports_varied_and_unknown_transport_types() {
    let bytes = wire(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

",
    );
    let transports: Vec<Transport> = request(&bytes)
        .headers
        .vias()
        .unwrap()
        .iter()
        .map(|v| v.transport().clone())
        .collect();
    assert_eq!(
        transports,
        [
            Transport::Udp,
            Transport::Sctp,
            Transport::Tls,
            Transport::Other("UNKNOWN".into()),
            Transport::Tcp
        ]
    );
    assert_round_trip(&bytes);
}

#[test]
fn s3_1_1_12_unreason_unusual_reason_phrase() {
    let bytes = wire(&format!(
        "SIP/2.0 200 = 2**3 * 5**2 \u{43d}\u{43e} \u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{43d}\u{43e}\u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{442}\u{44c} - \u{43f}\u{440}\u{43e}\u{441}\u{442}\u{43e}\u{435}
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 154
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>

{}",
        sdp("192.0.2.198")
    ));
    let r = response(&bytes);
    assert_eq!(r.status, 200);
    assert!(r.reason.starts_with("= 2**3 * 5**2 \u{43d}\u{43e}"));
    assert_eq!(r.body.len(), 154);
    assert_round_trip(&bytes);
}

#[test]
fn s3_1_1_13_noreason_empty_reason_phrase() {
    let bytes = wire(
        "SIP/2.0 100 \nVia: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
    );
    let r = response(&bytes);
    assert_eq!((r.status, r.reason.as_str()), (100, ""));
    assert_eq!(r.to_bytes(), bytes);
}

#[test]
fn s3_3_inv2543_rfc2543_style_invite() {
    let bytes = wire(
        "INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP iftgw.example.com
From: <sip:+13035551111@ift.client.example.net;user=phone>
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>
To: sip:+16505552222@ss1.example.net;user=phone
Call-ID: inv2543.1717@ift.client.example.com
CSeq: 56 INVITE
Content-Type: application/sdp

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.5
s=-
c=IN IP4 192.0.2.5
t=0 0
m=audio 49217 RTP/AVP 0
",
    );
    let r = request(&bytes);
    // No branch, no From tag, no Max-Forwards, no Content-Length: the datagram's rest is the
    // body, and `user=phone` after a bare To URI is a header parameter (RFC 3261 §20.10).
    assert_eq!(r.headers.top_via().unwrap().branch(), None);
    assert_eq!(r.headers.from().unwrap().tag(), None);
    assert_eq!(r.headers.max_forwards(), Ok(None));
    assert!(r.headers.to().unwrap().param("user").is_some());
    assert!(r.body.ends_with(b"RTP/AVP 0\r\n"));
    assert_round_trip(&bytes);
}

#[test]
fn s3_1_2_1_badinv01_extraneous_header_field_separators() {
    let bytes = wire(&format!(
        "INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: \"Joe\" <sip:joe@example.org>;;;;
Content-Length: 152
Content-Type: application/sdp

{}",
        sdp("192.0.2.15")
    ));
    let err = ParseError::InvalidHeader {
        name: "Via",
        source: HeaderError::InvalidParam,
    };
    assert_rejected(&bytes, &err, Some(400));
}

#[test]
fn s3_1_2_2_clerr_content_length_larger_than_message() {
    let bytes = wire(&format!(
        "INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999

{}",
        sdp("192.0.2.155")
    ));
    let err = ParseError::BodyTooShort {
        declared: 9999,
        available: wire(&sdp("192.0.2.155")).len(),
    };
    assert_rejected(&bytes, &err, Some(400));
}

#[test]
fn s3_1_2_3_ncl_negative_content_length() {
    let bytes = wire(&format!(
        "INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

{}",
        sdp("192.0.2.53")
    ));
    let err = ParseError::InvalidHeader {
        name: "Content-Length",
        source: HeaderError::InvalidNumber,
    };
    assert_rejected(&bytes, &err, Some(400));
}

#[test]
fn s3_1_2_4_scalar02_request_scalar_fields_with_overlarge_values() {
    let bytes = wire(&format!(
        "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1{zeros}
Contact: <sip:user@host129.example.com>;expires=280297596632815
Content-Length: 0

",
        zeros = "0".repeat(111)
    ));
    let err = ParseError::InvalidHeader {
        name: "CSeq",
        source: HeaderError::InvalidNumber,
    };
    assert_rejected(&bytes, &err, Some(400));
}

#[test]
fn s3_1_2_5_scalarlg_response_scalar_fields_with_overlarge_values() {
    let bytes = wire(
        "SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture \"In Progress\"
Content-Length: 0

",
    );
    let err = ParseError::InvalidHeader {
        name: "CSeq",
        source: HeaderError::InvalidNumber,
    };
    // A response is never answered.
    assert_rejected(&bytes, &err, None);
}

#[test]
fn s3_1_2_6_quotbal_unterminated_quoted_string_in_display_name() {
    let bytes = wire(&format!(
        "INVITE sip:user@example.com SIP/2.0
To: \"Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234
Content-Type: application/sdp
Content-Length: 152

{}",
        sdp("192.0.2.15")
    ));
    let err = ParseError::InvalidHeader {
        name: "To",
        source: HeaderError::UnterminatedQuote,
    };
    let answer = bad_request_response(&bytes, &err);
    assert_eq!(Message::parse(&bytes), Err(err));
    // The To cannot be parsed, so it is echoed without a tag; the answer is still sent.
    let answer = String::from_utf8(answer.unwrap()).unwrap();
    assert!(answer.starts_with("SIP/2.0 400 Invalid To\r\n"));
    assert!(answer.contains("\r\nTo: \"Mr. J. User <sip:j.user@example.com>\r\n"));
}

#[test]
fn s3_1_2_7_ltgtruri_angle_brackets_enclosing_request_uri() {
    let bytes = wire(
        "INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP 192.0.2.5
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: 0

",
    );
    let err = ParseError::InvalidRequestUri(UriError::InvalidScheme);
    assert_rejected(&bytes, &err, Some(400));
}

#[test]
fn s3_1_2_8_lwsruri_malformed_request_uri_with_embedded_lws() {
    let bytes = wire(
        "INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.example.net>
Content-Length: 0

",
    );
    let err = ParseError::InvalidRequestUri(UriError::InvalidParam);
    assert_rejected(&bytes, &err, Some(400));
}

#[test]
fn s3_1_2_9_lwsstart_multiple_sp_separating_request_line_elements() {
    let bytes = wire(
        "INVITE  sip:user@example.com  SIP/2.0
Max-Forwards: 8
To: sip:user@example.com
From: sip:caller@example.net;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923
Contact: <sip:caller@host1.example.net>
Content-Length: 0

",
    );
    assert_rejected(&bytes, &ParseError::MalformedStartLine, Some(400));
}

#[test]
fn s3_1_2_10_trws_sp_characters_at_end_of_request_line() {
    let bytes = wire(
        "OPTIONS sip:remote-target@example.com SIP/2.0\x20\x20
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK299342093
To: <sip:remote-target@example.com>
From: <sip:local-resource@example.com>;tag=329429089
Call-ID: trws.oicu34958239neffasdhr2345r
Accept: application/sdp
CSeq: 238923 OPTIONS
Max-Forwards: 70
Content-Length: 0

",
    );
    assert_rejected(&bytes, &ParseError::MalformedStartLine, Some(400));
}

#[test]
fn s3_1_2_11_escruri_escaped_headers_in_request_uri() {
    let bytes = wire(
        "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw
Content-Length: 0

",
    );
    let err = ParseError::InvalidRequestUri(UriError::HeadersNotAllowed);
    assert_rejected(&bytes, &err, Some(400));
}

#[test]
fn s3_1_2_13_regbadct_name_addr_uri_not_enclosed_in_angle_brackets() {
    let bytes = wire(
        "REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0

",
    );
    let err = ParseError::InvalidHeader {
        name: "Contact",
        source: HeaderError::InvalidNameAddr,
    };
    assert_rejected(&bytes, &err, Some(400));
}

#[test]
fn s3_1_2_14_badaspec_spaces_within_addr_spec() {
    let bytes = wire(
        "OPTIONS sip:user@example.org SIP/2.0
Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234
Max-Forwards: 70
From: \"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423
To: \"Watson, Thomas\" < sip:t.watson@example.org >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0

",
    );
    let err = ParseError::InvalidHeader {
        name: "To",
        source: HeaderError::InvalidUri(UriError::InvalidScheme),
    };
    assert_rejected(&bytes, &err, Some(400));
}

#[test]
fn s3_1_2_15_baddn_non_token_characters_in_display_name() {
    let bytes = wire(
        "OPTIONS sip:t.watson@example.org SIP/2.0
Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards:      70
From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To:      Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq:    3923239 OPTIONS
l: 0

",
    );
    let err = ParseError::InvalidHeader {
        name: "From",
        source: HeaderError::InvalidNameAddr,
    };
    assert_rejected(&bytes, &err, Some(400));
}

#[test]
fn s3_1_2_16_badvers_unknown_protocol_version() {
    let bytes = wire(
        "OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0

",
    );
    assert_rejected(&bytes, &ParseError::UnsupportedVersion, Some(505));
}

#[test]
fn s3_1_2_17_mismatch01_start_line_and_cseq_method_mismatch() {
    let bytes = wire(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
l: 0

",
    );
    assert_rejected(&bytes, &ParseError::CSeqMethodMismatch, Some(400));
}

#[test]
fn s3_1_2_18_mismatch02_unknown_method_with_cseq_method_mismatch() {
    let bytes = wire(
        "NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: 0

",
    );
    assert_rejected(&bytes, &ParseError::CSeqMethodMismatch, Some(400));
}

#[test]
fn s3_1_2_19_bigcode_overlarge_response_code() {
    let bytes = wire(
        "SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
    );
    assert_rejected(&bytes, &ParseError::InvalidStatusCode, None);
}

#[test]
fn s3_3_insuf_missing_required_header_fields() {
    let bytes = wire(&format!(
        "INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: 152

{}",
        sdp("192.0.2.95")
    ));
    // Without From, To and Call-ID no response can be built: the driver drops it.
    assert_rejected(&bytes, &ParseError::MissingHeader { name: "From" }, None);
}

#[test]
fn multi01_style_multiple_values_in_single_value_fields() {
    let bytes = wire(
        "INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
l: 0

",
    );
    assert_rejected(
        &bytes,
        &ParseError::DuplicateHeader { name: "From" },
        Some(400),
    );
}

#[test]
fn rport_requested_in_torture_style_via_is_stamped() {
    // The pjsip copy of wsinv carries `;rport`: the server fills it in (RFC 3581 §4).
    let mut via = super::Via::parse("SIP  /   2.0 /UDP 192.0.2.2;rport;branch=390skdjuw").unwrap();
    via.stamp_received("192.0.2.2:61000".parse().unwrap());
    assert_eq!(via.rport(), Some(Rport::Port(61000)));
    assert_eq!(via.received(), Some("192.0.2.2"));
}
