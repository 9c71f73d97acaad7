# stepgate's portal in English: the reference catalogue. Every other language has every
# key of this file (a test checks it). Values in { $name } are filled in by the portal;
# messages with markup (<strong>, <a>, <time>, <code>) keep it in translation.

## Shared words

nav-label = Account
nav-signed-in-as = Signed in as <strong>{ $user }</strong>
nav-security-settings = Security settings
nav-sessions = Sessions
nav-sign-out = Sign out
lang-switcher = Language
actions = Actions
continue = Continue
confirm = Confirm
verify = Verify
done = Done
remove = Remove
send-me-a-code = Send me a code
back-to-sign-in = Back to sign-in
go-to-account = Go to your account
sign-in = Sign in
sign-in-again = Sign in again
try-again = Try again
add-passkey = Add a passkey
passkey-default-label = Passkey
your-administrator = your administrator
help-desk = the help desk
help-desk-page = help desk page
help-desk-at = at
field-username = Username
field-password = Password
field-new-password = New password
field-type-again = Type it again
field-recovery-code = One of your recovery codes
field-name-it = Name it
field-email = E-mail address
field-phone = Phone number (international format, +33…)

## Ways to sign in, as titles and as the object of a sentence

factor-password = Password
factor-security_questions = Security questions
factor-totp = Authenticator app
factor-email_otp = E-mail code
factor-sms_otp = Text-message code
factor-recovery_codes = Recovery code
factor-webauthn = Passkey or security key
factor-upstream = Your organisation's sign-in
factor-other = Another way to sign in
needs-password = your password
needs-security_questions = your security questions
needs-totp = your authenticator app
needs-email_otp = a code sent to your e-mail
needs-sms_otp = a code sent to your phone
needs-recovery_codes = a recovery code
needs-webauthn = a passkey or security key
needs-upstream = your organisation's sign-in
needs-other = another way to confirm it's you
needs-security-key = your security key
needs-strongest = your strongest way to sign in (a passkey or security key)
needs-second-way = a second way to confirm it's you, besides your password
needs-every-time = { $what }, every time
needs-within = { $what }, within the last { $age }
reason-this-needs = This needs { $what }.
reason-signing-in-needs = Signing in needs { $what }.
reason-app-asks = { $app } asks for { $what }.
reason-changing-sign-in = Changing how you sign in needs { $what }.
reason-denied = Your access to this application is blocked.
reason-sign-in-denied = Signing in is blocked.
duration-seconds = { $n ->
    [one] { $n } second
   *[other] { $n } seconds
}
duration-minutes = { $n ->
    [one] { $n } minute
   *[other] { $n } minutes
}
duration-hours = { $n ->
    [one] { $n } hour
   *[other] { $n } hours
}
duration-days = { $n ->
    [one] { $n } day
   *[other] { $n } days
}
level-strongest = strongest sign-in
level-two-step = two-step sign-in
level-password = password only
strength-strong = Strong (phishing-resistant)
strength-only-with-another = Only together with another way
strength-basic = Basic: one step
strength-medium = Strong
strength-strongest = Strongest
strength-on-security-key = kept on a security key

## Sign-in

login-title = Sign in
login-continue-to = to continue to <strong>{ $app }</strong>
login-legend = Sign in with your password
login-remember = Keep me signed in on this device
login-submit = Sign in
login-with-organisation = Or sign in with your organisation
login-with-provider = Sign in with { $provider }
login-passwordless = Or sign in without a password
login-passwordless-hint = Use a passkey saved on this device or a security key.
login-with-passkey = Sign in with a passkey
paused-until = You can try again at <time datetime="{ $until }" data-local-time>{ $until_utc }</time>.
paused-ask = If you cannot wait, ask { $who }: they can unlock your account.

## Confirming it's you (step-up)

stepup-title = Confirm it's you
stepup-sign-in-title = One more step to sign in
stepup-confirm-with = Confirm with { $provider }
stepup-none-yet-add = You don't have a way to confirm this yet. Add one in your security settings: you will come straight back here.
stepup-add-a-way = Add a way to confirm it's you
stepup-none-yet-ask = You don't have a way to confirm this yet. Ask { $who } to send you a set-up link.
stepup-legend = Ways to confirm it's you
stepup-cant-use-app = Can't use your authenticator app?
stepup-cant-use-passkey = Can't use your passkey?
stepup-try-another-way = Try another way
stepup-none-work = None of these work?
stepup-no-other-way = There is no other way set up for you.
stepup-ask-help = Ask { $who }: they can check it's you and let you add a new way to sign in.
stepup-signing-in-as = Signing in as <strong>{ $user }</strong>. Not you?
stepup-cancel-sign-in = Cancel this sign-in
stepup-request = Request <code id="request-id">{ $request }</code>
offer-emergency-title = For emergencies: a recovery code
offer-emergency-hint = Lost your phone or key? Each recovery code you saved when you set them up works once.
offer-use-passkey = Use your passkey or security key
offer-totp-code = Code from your authenticator app
offer-send-sms = Send me a code by text message
offer-send-email = Send me a code by e-mail
offer-code-received = Code you received
offer-your-password = Your password

## Blocked

blocked-title = Access blocked
blocked-app = You can't open <strong>{ $app }</strong> right now.
blocked-what-needs-fixing = What needs fixing
blocked-fixed-it = Fixed it? Check your device again and go on.
blocked-recheck = Re-check my device
blocked-demo = Demo: pick another device profile on the <a href="{ $url }">security settings page</a>, then re-check.
blocked-who-to-ask = If you need access, ask { $who }.
blocked-still-stuck = Still stuck? Ask { $who }.
blocked-give-up = Cancel and go back to the application
blocked-reference = Blocked at <time datetime="{ $at }">{ $time }</time> · reference { $policy }
blocked-request = request <code id="request-id">{ $request }</code>
blocked-give-these = Give these to the help desk if you ask for help.
check-device-unregistered = This device is not registered with your organisation
check-device-registered = This device is registered but not managed by your organisation
check-device-managed = This device is managed but has no EDR agent reporting
check-device-fix = Use a company-managed device, or enrol this one in device management

## Messages

message-reference = Reference <code id="request-id">{ $request }</code>. Give it to the help desk if you ask for help.
error-bad-request-title = This request cannot be used
error-bad-request-text = The page sent something stepgate cannot use: it may be out of date, or belong to another account. Go to your account page and start again from there.
error-store-down-title = Try again in a moment
error-store-down-text = stepgate cannot reach its records right now, so nothing was changed. Wait a moment and try again.
error-form-expired-title = Form expired
error-form-expired-text = This form expired or did not come from stepgate, so nothing was sent. Open the page again and try once more.
error-signed-out-title = Signed out
error-signed-out-text = Your session ended. Sign in again.
error-link-expired-title = Link expired
error-link-expired-text = This link is invalid or has expired. Go back to the application and try again: it sends you a new link.
error-cookie-title = Cookie problem
error-not-signed-in-title = Not signed in
lang-unknown-title = Language not available
lang-unknown-text = The portal does not speak that language. It is shown in English or French.

## Security settings

account-resume-now = Now you can go back to <strong>{ $app }</strong> and confirm it's you.
account-continue-to = Continue to { $app }
account-resume-add = Add a passkey below to continue to <strong>{ $app }</strong>; you will come straight back.
account-confirm-first = Adding or removing a way to sign in asks you to confirm it's you first.
account-your-ways = Your ways to sign in
account-method = Method
account-strength = Strength
account-added = Added
account-last-used = last used { $when }
account-remove-label = Remove { $title } { $label }
account-nothing-yet = Nothing yet.
account-change-password-title = Change your password
account-password-rules = At least { $min } characters. Common and leaked passwords are refused.
account-sign-out-others = Sign out my other sessions
account-change-password = Change password
account-add-a-way = Add a way to sign in
account-passkey-hint = Phishing-resistant: the strongest option.
account-add-security-key = Add a security key
account-email-codes = E-mail codes
account-sms-codes = Text-message codes
account-send-verification = Send a verification code
account-verification-code = Verification code we sent
account-question = Question { $n }
account-answer = Answer { $n }
account-save-questions = Save security questions
account-recovery-codes = Recovery codes
account-recovery-hint = Single-use codes for emergencies, when you lose your phone or security key. Generating new ones voids the old.
account-generate-codes = Generate recovery codes
demo-title = Demo: this device
demo-hint = stepgate demo pretends your browser is one of these devices (in production the posture comes from your UEM/EDR).
demo-save = Use this device profile
totp-title = Set up an authenticator app
totp-scan = Scan the code with your authenticator app, then enter the 6-digit code it shows.
totp-cant-scan = Can't scan? Enter this key:
totp-code-from-app = Code from the app
codes-title = Your recovery codes
codes-lead = Save these somewhere safe. Each works once. They are shown only now.
codes-download = Download as a text file
codes-print = Print
codes-copy = Copy

## Sessions and devices

sessions-title = Your sessions
sessions-signed-in = Signed in
sessions-from = From
sessions-last-active = Last active
sessions-near = near { $place }
sessions-level = Level
sessions-current = this browser (current session)
sessions-end = End
sessions-end-label = End the session on { $browser } signed in { $when }
sessions-sign-out-everywhere = Sign out everywhere
devices-title = Your devices
devices-device = Device
devices-state = State
devices-this-browser = this browser
devices-remove-label = Remove { $name }
devices-managed = managed by your organisation
devices-none = No registered devices.
devices-register = Register this browser

## Passwords and first sign-in

forgot-title = Forgot your password?
forgot-recovery-lead = If you saved recovery codes when you set up your account, use one to choose a new password. Each code works once.
forgot-by-email = Get a code by e-mail
forgot-code-sent = If { $user } has an e-mail address set up for signing in, we sent a code to it. It works once, for a few minutes.
forgot-code-from-email = Code from the e-mail
forgot-email-lead = If you set up an e-mail address for signing in, we can send a code to it.
forgot-no-codes = No recovery codes?
forgot-no-codes-or-email = No recovery codes or e-mail?
forgot-ask = Ask { $who } for a password-reset link. They can send you one that works once.
setpw-welcome-title = Welcome — choose a password
setpw-title = Choose a new password
setpw-welcome-lead = Hello { $name }. Set a password for <strong>{ $user }</strong>, then add a passkey or an authenticator app to finish setting up your account.
setpw-lead = Set a new password for <strong>{ $user }</strong>. You will be signed out everywhere else.
setpw-rules = At least { $min } characters. A long phrase of a few unrelated words is strong and easy to remember. Common and leaked passwords are refused.
setpw-submit-welcome = Set password and continue
setpw-submit = Set new password
setpw-link-once = This link works once. It expires at <time datetime="{ $at }">{ $time }</time>.
welcome-title = Add a second way to sign in
welcome-all-set = You're all set, { $name }.
welcome-lead = Your password is set, { $name }. Now add a passkey or an authenticator app: you will use it with your password when you sign in.
welcome-first-sign-in-lead = Welcome, { $name }. Signing in needs more than your password: add a passkey or an authenticator app now, then use it to finish signing in. You will use it with your password from now on.
welcome-passkey-title = Passkey or security key (recommended)
welcome-passkey-hint = Your phone, computer or security key confirms it's you with your fingerprint, face or PIN. Nobody can trick you into giving it away.
welcome-totp-hint = An app on your phone (such as Google Authenticator, Microsoft Authenticator or 1Password) shows a new 6-digit code every 30 seconds.
welcome-skip = Skip for now

## Errors of the sign-in forms

auth-no-match = That did not match. Check and try again.
auth-locked-until = { $wait } (at { $time } UTC). If you cannot wait, your help desk can unlock your account.
auth-replayed = That code was already used. Wait for the next one.
auth-expired = That code has expired. Ask for a new one.
auth-too-many-guesses = Too many wrong guesses for that code. Ask for a new one.
auth-not-set-up = You have no { $kind } set up.
auth-disabled = This account is disabled. Contact your administrator.
auth-account-locked = This account is locked after too many failed attempts. Your help desk can unlock it.
auth-rate-limited = Too many codes requested. Wait a few minutes.
auth-paused = Too many failed attempts, so signing in is paused. Try again { $minutes ->
    [one] in a minute
   *[other] in { $minutes } minutes
}.
auth-tries-left = { $n ->
    [one] 1 more try
   *[other] { $n } more tries
} before signing in is paused for { $minutes ->
    [one] a minute
   *[other] { $minutes } minutes
}.

## The gateway's own pages

gateway-start-page-of = Go to the start page of { $app }
gateway-bad-request-title = This address cannot be opened
gateway-bad-request-text = stepgate refused this request: { $why }. Check the link you followed.
gateway-method-title = This request is not allowed
gateway-method-text = stepgate does not pass on this kind of request: { $why }.
gateway-misdirected-title = Not served here
gateway-misdirected-text = This address is not one stepgate serves. Check the link, or ask your administrator which address to use.
gateway-not-found-title = Page not found
gateway-not-found-text = No application is configured for this address. Check the link, or go to your account page.
gateway-bad-gateway-title = The application is not answering
gateway-bad-gateway-text = The application behind this address is unavailable right now. You are still signed in; try again in a moment.
gateway-timeout-title = The application took too long
gateway-timeout-text = The application behind this address did not answer in time. You are still signed in; try again in a moment.
gateway-unavailable-text = stepgate cannot check this request right now, so it did not let it through. Try again in a moment.

## Portal pages

portal-not-found-text = There is no page at this address. Check the link, or go to your account page.
portal-method-title = This page cannot be opened this way
portal-method-text = This address is for a form, not for opening directly. Go to your account page and start again from there.
signed-out = You are signed out.
signed-out-everywhere = You are signed out on every device.
browser-on = { $browser } on { $os }
browser-unknown-on = A browser on { $os }
browser-unknown = An unknown browser
notice-totp = Authenticator app added.
notice-webauthn = Passkey added.
notice-contact = Verified and added.
notice-questions = Security questions saved.
notice-removed = Removed.
notice-password = Password changed.
notice-password-others = Password changed. Your other sessions were signed out.
notice-device = Demo device profile changed.
notice-confirmed = Confirmed. Nothing has been changed yet: make your change again.
totp-not-added = The authenticator app was not added: { $why }
codes-file-heading = Recovery codes for { $user } (each works once)
password-not-same = The two passwords are not the same. Type the same password twice.
password-not-changed = Your password was not changed. Choose another: { $why }.
stepup-code-sent = We sent a code to { $address }.
stepup-one-more-step = Done. One more step is needed.
confirmed-title = Confirmed
confirmed-action = Confirmed. Your request to { $what } has not been sent yet: go back and press the button again.
confirmed-request = Confirmed. Your request has not been sent yet: go back and press the button again.
back-to-app = Back to { $app }
login-wrong = Wrong username or password.
link-disabled-title = Account disabled
link-expired-title = This link has expired
link-expired-text = This link has expired or was already used. Each link works once. Ask your administrator for a new one.
password-choose-another = Choose another password: { $why }.
forgot-no-match = That username and recovery code do not match. Check both and try again.
forgot-type-username = Type your username, then ask for a code.
forgot-code-no-match = That code does not match, or has expired. Check it, or ask for a new one.
webauthn-page-expired = This page has expired. Reload it and try again.
webauthn-not-this-account = That passkey is not one of this account's. Use a passkey you added here, or use another way to sign in.
webauthn-prompt-expired = The passkey prompt expired. Try again.
webauthn-session-expired = Your session or this page has expired. Go back to the app and try again.
webauthn-invitation-expired = This page has expired. Use your invitation link again, or ask for a new one.
webauthn-signed-out = You are signed out. Sign in again, then add your passkey.
webauthn-other-account = That passkey belongs to another account. Use your own passkey, or use another way.
handoff-title = Sign-in link not valid
handoff-text = This sign-in link has expired, was already used, or was meant for another browser. Open the app again to continue.

## Words the page scripts show (webauthn.js, portal.js)

js-server-error = Something went wrong on our side. Try again in a moment.
js-not-allowed-register = The passkey was not added: the prompt was cancelled, timed out, or your device could not confirm it's you. Try again when you're ready.
js-not-allowed = No passkey was used: the prompt was cancelled or timed out, your device could not confirm it's you, or it has no passkey for this account. Try again, or use another way to sign in.
js-invalid-state-register = This device already holds a passkey for your account. Use that one, or add a passkey on another device or security key.
js-invalid-state = Your passkey could not be used on this device. Try again, or use another way to sign in.
js-abort = The passkey prompt was closed. Try again when you're ready.
js-security = Passkeys cannot be used at this address. Open the site at its usual address and try again.
js-not-supported = This browser or device cannot use this kind of passkey. Try another browser, or use another way to sign in.
js-constraint = Your device could not confirm it's you: set up a screen lock, fingerprint or PIN on it, or use another way to sign in.
js-network = We could not reach the server. Check your connection and try again.
js-other = Something went wrong with the passkey. Try again, or use another way to sign in.
js-follow-prompt = Follow your browser's prompt…
js-taking-you-on = Done. Taking you on…
js-copy-unavailable = Copying is not available here: select the codes and copy them.
js-copied = Copied.
js-copy-failed = Copying did not work: select the codes and copy them.
js-no-passkeys = This browser does not support passkeys. Update it or use another browser, or use another way to sign in.
js-try-again-now = You can try again now.
