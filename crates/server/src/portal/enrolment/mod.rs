//! Getting in the first time, and back in after a lost password: the single-use links an
//! administrator issues (`stepgate user invite`, `stepgate user reset-link`; see
//! [`stepgate_authn::LinkPurpose`]).
//!
//! - `GET {portal}/invite/{token}`: "Choose a password" (the link is only read, so a mail
//!   scanner that follows it does not use it up); `POST`: the password set, the link used up
//!   for good, and the sign-in decided through the access pipeline like any other
//!   ([`crate::portal::signin::sign_in`]). Where the policy asks for more than the password, the user
//!   is not left at a step-up page with nothing to offer: they land on the welcome page
//!   (`GET {portal}/welcome?g=…`), where the *enrolment grant* the link's use earned lets
//!   this one session add a passkey or an authenticator app, then go on to the step-up page
//!   and pass it with the new factor. A sign-in started with a password alone earns no such
//!   grant: it cannot enrol a factor before it is complete.
//! - `GET|POST {portal}/reset/{token}`: the same for a new password; every other session of
//!   the user is ended, and the sign-in goes on with the factors the user has.
//! - `enrolment.at_first_sign_in` ([`at_first_sign_in`], off by default): a password
//!   sign-in that stops at the step-up page, for a user with nothing but a password, from
//!   one of the named networks, earns the same grant and goes to the welcome page.
//!
//! The links and their set-password page are in [`links`], the enrolment grant and the
//! welcome page in [`welcome`], "Forgot your password?" in [`forgot`].

mod forgot;
mod links;
mod welcome;

pub use forgot::{forgot_email_send, forgot_email_submit, forgot_page, forgot_submit, ForgotForm};
pub use links::{link_open, link_redeem, SetPasswordForm};
pub use welcome::{
    at_first_sign_in, granted, welcome_page, welcome_totp, EnrolGrant, GrantQuery, WelcomeForm,
};
