//! stepgate's signals: everything the gateway learns about a request before the policy
//! engine decides, turned into the pieces of [`stepgate_policy::RequestContext`].
//!
//! * [`geoip`]: country, region, city, coordinates and ASN from a MaxMind `.mmdb` file,
//!   reloaded when the file changes;
//! * [`iprisk`]: an IP risk score 0–100 from feed files and an HTTP provider;
//! * [`useragent`]: browser, OS and device class;
//! * [`risk`]: per-user sign-in history and the behavioural risk scorer;
//! * [`device`]: the device registry model, posture pushes, device binding, device cookies;
//! * [`compliance`]: compliance policies (toggles and AND/OR rules) and their verdicts;
//! * [`certs`]: client certificate chain validation with CRL and OCSP;
//! * [`caep`]: Shared Signals / CAEP Security Event Token verification;
//! * [`recheck`]: the "Re-check my device" webhook and the wait for fresh posture;
//! * [`connectors`]: pulling devices from Hexnode UEM, Intune and Jamf Pro on a schedule;
//! * [`config`]: the `signals:` and `devices:` configuration sections.
//!
//! I/O stays at the edges (file loads, HTTP fetches); scoring and evaluation are pure.
//!
//! What does not belong here: deciding (the policy crate), HTTP endpoints that receive
//! signals (the server's `devices` room serves the posture API and the CAEP receiver on
//! top of [`device`] and [`caep`]), and where devices are stored (the store crate).

pub mod caep;
pub mod certs;
pub mod compliance;
pub mod config;
pub mod connectors;
pub mod device;
pub mod geoip;
pub mod iprisk;
pub mod recheck;
pub mod risk;
pub mod useragent;

pub use compliance::{CompliancePolicy, ComplianceVerdict};
pub use device::{device_context, Device, DeviceBinding, PosturePush};
