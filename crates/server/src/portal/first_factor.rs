//! A first factor just passed — a password, a passkey, an enrolment link's new password,
//! an upstream provider's sign-in — and where the request came from: what every way of
//! signing in hands to [`super::signin::sign_in`], built here the same way for all.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::{request::Parts, HeaderMap};
use axum::response::{IntoResponse, Response};
use stepgate_authn::PassedFactor;
use stepgate_store::UserRecord;

use super::extract::Here;
use crate::access::request::client_ip;
use crate::access::signals::PeerCertificates;
use crate::access::Connection;
use crate::app::responses::Peer;
use crate::app::state::Shared;

/// What a sign-in handler reads of its request for an [`Arrival`]: the peer, the client
/// certificate the TLS connection presented, and the headers.
pub struct Incoming {
    peer: Peer,
    tls: Option<PeerCertificates>,
    headers: HeaderMap,
}

impl FromRequestParts<Shared> for Incoming {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> Result<Self, Response> {
        let peer = Peer::from_request_parts(parts, st)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Incoming {
            peer,
            tls: parts.extensions.get::<PeerCertificates>().cloned(),
            headers: parts.headers.clone(),
        })
    }
}

impl Incoming {
    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// Where a sign-in came from: the client address, the request's headers, its connection.
#[derive(Clone, Copy)]
pub struct Arrival<'a> {
    /// The client address (behind trusted proxies, the one they name).
    pub ip: Option<IpAddr>,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The connection it came over (the client certificate is device evidence).
    pub connection: Connection<'a>,
}

impl<'a> Arrival<'a> {
    /// The request a handler was given.
    pub fn of(rt: &Here, from: &'a Incoming) -> Self {
        Arrival {
            ip: client_ip(rt, from.peer.0, &from.headers),
            headers: &from.headers,
            connection: Connection {
                peer: Some(from.peer.0.ip()),
                tls: from.tls.as_ref(),
            },
        }
    }
}

/// A first factor just passed, and where the sign-in came from and goes back to.
pub struct FirstFactor<'a> {
    /// The user.
    pub user: UserRecord,
    /// The factor.
    pub factor: PassedFactor,
    /// Further factors the same step proved (an upstream provider's trusted `amr`).
    pub also: Vec<PassedFactor>,
    /// The verified return target (the account page when none).
    pub target: Option<String>,
    /// "Keep me signed in".
    pub remember: bool,
    /// The client address.
    pub ip: Option<IpAddr>,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The connection it came over (the client certificate is device evidence).
    pub connection: Connection<'a>,
    /// The upstream provider's sign-in, when the factor came from one (kept in the session
    /// for signing out there and for the provider's back-channel logout).
    pub upstream: Option<stepgate_authn::session::UpstreamSignIn>,
}

impl<'a> FirstFactor<'a> {
    /// `factor` passed by `user` in the request `from`: nothing else proved, back to the
    /// account page, not kept past the browser session, no upstream provider.
    pub fn new(user: UserRecord, factor: PassedFactor, from: Arrival<'a>) -> Self {
        FirstFactor {
            user,
            factor,
            also: Vec::new(),
            target: None,
            remember: false,
            ip: from.ip,
            headers: from.headers,
            connection: from.connection,
            upstream: None,
        }
    }
}
