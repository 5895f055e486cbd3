//! A software WebAuthn authenticator for the JSON-API tests: a P-256 key (ES256),
//! "none" attestation, and the CBOR and signatures of WebAuthn Level 2 built by
//! hand, so that the relying party (webauthn-rs) checks a real registration and
//! real assertions. The browser tests use Chromium's virtual authenticator instead.

use aws_lc_rs::{
    digest,
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde_json::{Value, json};

pub struct SoftKey {
    key: EcdsaKeyPair,
    pub cred_id: Vec<u8>,
    user_handle: Vec<u8>,
    rp_id: String,
    origin: String,
    pub counter: u32,
    /// Whether the authenticator says it verified its user (PIN, biometrics).
    pub uv: bool,
}

fn cbor_text(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 24);
    out.push(0x60 | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn cbor_bytes(out: &mut Vec<u8>, b: &[u8]) {
    match b.len() {
        n if n < 24 => out.push(0x40 | n as u8),
        n if n < 256 => out.extend_from_slice(&[0x58, n as u8]),
        n => out.extend_from_slice(&[0x59, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(b);
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().expect("a base64url string")).unwrap()
}

impl SoftKey {
    fn flags(&self, extra: u8) -> u8 {
        0x01 | if self.uv { 0x04 } else { 0 } | extra
    }

    fn client_data(&self, kind: &str, challenge: &Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": kind,
            "challenge": challenge,
            "origin": self.origin,
            "crossOrigin": false,
        }))
        .unwrap()
    }

    /// Answers `navigator.credentials.create({publicKey})` for `origin`: the key,
    /// and the `PublicKeyCredential` as JSON.
    pub fn register(public_key: &Value, origin: &str) -> (SoftKey, Value) {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).unwrap();
        let soft = SoftKey {
            key,
            cred_id: id.to_vec(),
            user_handle: b64(&public_key["user"]["id"]),
            rp_id: public_key["rp"]["id"].as_str().unwrap().to_owned(),
            origin: origin.to_owned(),
            counter: 0,
            uv: true,
        };
        let cd = soft.client_data("webauthn.create", &public_key["challenge"]);
        let point = soft.key.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65);
        let mut cose = vec![0xA5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
        cbor_bytes(&mut cose, &point[1..33]);
        cose.push(0x22);
        cbor_bytes(&mut cose, &point[33..]);
        let mut auth = digest::digest(&digest::SHA256, soft.rp_id.as_bytes()).as_ref().to_vec();
        auth.push(soft.flags(0x40));
        auth.extend_from_slice(&soft.counter.to_be_bytes());
        auth.extend_from_slice(&[0u8; 16]);
        auth.extend_from_slice(&(soft.cred_id.len() as u16).to_be_bytes());
        auth.extend_from_slice(&soft.cred_id);
        auth.extend_from_slice(&cose);
        let mut att = vec![0xA3];
        cbor_text(&mut att, "fmt");
        cbor_text(&mut att, "none");
        cbor_text(&mut att, "attStmt");
        att.push(0xA0);
        cbor_text(&mut att, "authData");
        cbor_bytes(&mut att, &auth);
        let id = B64.encode(&soft.cred_id);
        let credential = json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "response": {"clientDataJSON": B64.encode(&cd), "attestationObject": B64.encode(&att)},
            "extensions": {},
        });
        (soft, credential)
    }

    /// Answers `navigator.credentials.get({publicKey})`.
    pub fn assert(&mut self, public_key: &Value) -> Value {
        self.counter += 1;
        let cd = self.client_data("webauthn.get", &public_key["challenge"]);
        let mut auth = digest::digest(&digest::SHA256, self.rp_id.as_bytes()).as_ref().to_vec();
        auth.push(self.flags(0));
        auth.extend_from_slice(&self.counter.to_be_bytes());
        let mut signed = auth.clone();
        signed.extend_from_slice(digest::digest(&digest::SHA256, &cd).as_ref());
        let sig = self.key.sign(&SystemRandom::new(), &signed).unwrap();
        let id = B64.encode(&self.cred_id);
        json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "response": {
                "authenticatorData": B64.encode(&auth),
                "clientDataJSON": B64.encode(&cd),
                "signature": B64.encode(sig.as_ref()),
                "userHandle": B64.encode(&self.user_handle),
            },
            "extensions": {},
        })
    }
}
