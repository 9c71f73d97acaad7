//! Issue 16, tried as an attacker would, through the live server: each class of request
//! that once reached an upstream without the policy its route should get (or let one
//! session stand in for another) is refused, or read the way the upstream will read it.
//!
//! | class | tests |
//! |---|---|
//! | 1. one parse of the target | `targets::targets_upstreams_read_differently_are_refused_by_the_proxy`, `targets::forward_auth_refuses_what_it_cannot_read_and_never_defaults` |
//! | 2. forwarded client address | `headers::an_unreadable_forwarded_address_is_unknown_never_the_proxys` |
//! | 3. identity header spellings | `headers::identity_headers_never_reach_the_upstream_under_another_spelling` |
//! | 4. session ids stay in the cookie | `sessions::no_page_shows_a_session_id_or_anything_it_can_be_derived_from` |
//! | 5. exact cookie names | `sessions::the_session_cookie_counts_only_under_its_exact_name_and_once` |
//! | 6. redirects from configuration | `responses::redirects_name_only_configured_hosts_and_others_get_421` |
//! | 7. explicit upgrades | `responses::only_websocket_upgrades_pass_and_tunnels_are_405` |
//! | 9. security headers | `responses::every_refusal_carries_the_security_headers` |
//!
//! What the classes share (the config, a recording upstream, signing jane in) is in `common`.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod headers;
mod responses;
mod sessions;
mod targets;
