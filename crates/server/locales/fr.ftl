# Le portail de stepgate en français. Chaque clé de en.ftl doit être ici (un test le
# vérifie). Les valeurs { $nom } sont remplies par le portail ; le balisage (<strong>, <a>,
# <time>, <code>) des messages est gardé tel quel.

## Mots communs

nav-label = Compte
nav-signed-in-as = Connecté en tant que <strong>{ $user }</strong>
nav-security-settings = Paramètres de sécurité
nav-sessions = Sessions
nav-sign-out = Se déconnecter
lang-switcher = Langue
actions = Actions
continue = Continuer
confirm = Confirmer
verify = Vérifier
done = Terminé
remove = Supprimer
send-me-a-code = M’envoyer un code
back-to-sign-in = Retour à la connexion
go-to-account = Aller à votre compte
sign-in = Se connecter
sign-in-again = Se reconnecter
try-again = Réessayer
add-passkey = Ajouter une clé d’accès
passkey-default-label = Clé d’accès
your-administrator = votre administrateur
help-desk = le support informatique
help-desk-page = page du support
help-desk-at = à l’adresse
field-username = Nom d’utilisateur
field-password = Mot de passe
field-new-password = Nouveau mot de passe
field-type-again = Saisissez-le à nouveau
field-recovery-code = Un de vos codes de secours
field-name-it = Nommez-la
field-email = Adresse e-mail
field-phone = Numéro de téléphone (format international, +33…)

## Moyens de connexion, comme titres et comme complément d’une phrase

factor-password = Mot de passe
factor-security_questions = Questions de sécurité
factor-totp = Application d’authentification
factor-email_otp = Code par e-mail
factor-sms_otp = Code par SMS
factor-recovery_codes = Code de secours
factor-webauthn = Clé d’accès ou clé de sécurité
factor-upstream = La connexion de votre organisation
factor-other = Un autre moyen de connexion
needs-password = votre mot de passe
needs-security_questions = vos questions de sécurité
needs-totp = votre application d’authentification
needs-email_otp = un code envoyé à votre adresse e-mail
needs-sms_otp = un code envoyé à votre téléphone
needs-recovery_codes = un code de secours
needs-webauthn = une clé d’accès ou une clé de sécurité
needs-upstream = la connexion de votre organisation
needs-other = un autre moyen de confirmer que c’est bien vous
needs-security-key = votre clé de sécurité
needs-strongest = votre moyen de connexion le plus sûr (une clé d’accès ou une clé de sécurité)
needs-second-way = un deuxième moyen de confirmer que c’est bien vous, en plus de votre mot de passe
needs-every-time = { $what }, à chaque fois
needs-within = { $what }, datant de moins de { $age }
reason-this-needs = Cette action demande { $what }.
reason-signing-in-needs = Pour vous connecter, il faut { $what }.
reason-app-asks = { $app } demande { $what }.
reason-changing-sign-in = Modifier vos moyens de connexion demande { $what }.
reason-denied = Votre accès à cette application est bloqué.
reason-sign-in-denied = La connexion est bloquée.
duration-seconds = { $n ->
    [one] { $n } seconde
   *[other] { $n } secondes
}
duration-minutes = { $n ->
    [one] { $n } minute
   *[other] { $n } minutes
}
duration-hours = { $n ->
    [one] { $n } heure
   *[other] { $n } heures
}
duration-days = { $n ->
    [one] { $n } jour
   *[other] { $n } jours
}
level-strongest = connexion la plus sûre
level-two-step = connexion en deux étapes
level-password = mot de passe seul
strength-strong = Forte (résiste à l’hameçonnage)
strength-only-with-another = Seulement avec un autre moyen
strength-basic = Simple : une étape
strength-medium = Forte
strength-strongest = La plus forte
strength-on-security-key = conservée sur une clé de sécurité

## Connexion

login-title = Se connecter
login-continue-to = pour continuer vers <strong>{ $app }</strong>
login-legend = Se connecter avec votre mot de passe
login-remember = Rester connecté sur cet appareil
login-submit = Se connecter
login-with-organisation = Ou connectez-vous avec votre organisation
login-with-provider = Se connecter avec { $provider }
login-passwordless = Ou connectez-vous sans mot de passe
login-passwordless-hint = Utilisez une clé d’accès enregistrée sur cet appareil ou une clé de sécurité.
login-with-passkey = Se connecter avec une clé d’accès
paused-until = Vous pourrez réessayer à <time datetime="{ $until }" data-local-time>{ $until_utc }</time>.
paused-ask = Si vous ne pouvez pas attendre, demandez à { $who } : il peut débloquer votre compte.

## Confirmer que c’est bien vous

stepup-title = Confirmez que c’est bien vous
stepup-sign-in-title = Encore une étape pour vous connecter
stepup-confirm-with = Confirmer avec { $provider }
stepup-none-yet-add = Vous n’avez pas encore de moyen de confirmer cette action. Ajoutez-en un dans vos paramètres de sécurité : vous reviendrez directement ici.
stepup-add-a-way = Ajouter un moyen de confirmer que c’est bien vous
stepup-none-yet-ask = Vous n’avez pas encore de moyen de confirmer cette action. Demandez à { $who } de vous envoyer un lien de configuration.
stepup-legend = Moyens de confirmer que c’est bien vous
stepup-cant-use-app = Vous ne pouvez pas utiliser votre application d’authentification ?
stepup-cant-use-passkey = Vous ne pouvez pas utiliser votre clé d’accès ?
stepup-try-another-way = Essayer autrement
stepup-none-work = Aucun ne fonctionne ?
stepup-no-other-way = Aucun autre moyen n’est configuré pour vous.
stepup-ask-help = Demandez à { $who } : il peut vérifier votre identité et vous laisser ajouter un nouveau moyen de connexion.
stepup-signing-in-as = Connexion en tant que <strong>{ $user }</strong>. Ce n’est pas vous ?
stepup-cancel-sign-in = Annuler cette connexion
stepup-request = Requête <code id="request-id">{ $request }</code>
offer-emergency-title = En cas d’urgence : un code de secours
offer-emergency-hint = Vous avez perdu votre téléphone ou votre clé ? Chaque code de secours enregistré lors de leur création ne fonctionne qu’une fois.
offer-use-passkey = Utiliser votre clé d’accès ou clé de sécurité
offer-totp-code = Code de votre application d’authentification
offer-send-sms = M’envoyer un code par SMS
offer-send-email = M’envoyer un code par e-mail
offer-code-received = Code reçu
offer-your-password = Votre mot de passe

## Accès bloqué

blocked-title = Accès bloqué
blocked-app = Vous ne pouvez pas ouvrir <strong>{ $app }</strong> pour le moment.
blocked-what-needs-fixing = Ce qu’il faut corriger
blocked-fixed-it = C’est corrigé ? Vérifiez de nouveau votre appareil et continuez.
blocked-recheck = Vérifier de nouveau mon appareil
blocked-demo = Démo : choisissez un autre profil d’appareil sur la <a href="{ $url }">page des paramètres de sécurité</a>, puis vérifiez de nouveau.
blocked-who-to-ask = Si vous avez besoin d’accès, demandez à { $who }.
blocked-still-stuck = Toujours bloqué ? Demandez à { $who }.
blocked-give-up = Annuler et revenir à l’application
blocked-reference = Bloqué à <time datetime="{ $at }">{ $time }</time> · référence { $policy }
blocked-request = requête <code id="request-id">{ $request }</code>
blocked-give-these = Communiquez-les au support si vous demandez de l’aide.
check-device-unregistered = Cet appareil n’est pas enregistré auprès de votre organisation
check-device-registered = Cet appareil est enregistré mais n’est pas géré par votre organisation
check-device-managed = Cet appareil est géré mais aucun agent EDR ne remonte d’informations
check-device-fix = Utilisez un appareil géré par l’entreprise, ou inscrivez celui-ci dans la gestion des appareils

## Messages

message-reference = Référence <code id="request-id">{ $request }</code>. Communiquez-la au support si vous demandez de l’aide.
error-bad-request-title = Cette requête ne peut pas être utilisée
error-bad-request-text = La page a envoyé quelque chose que stepgate ne peut pas utiliser : elle est peut-être périmée, ou appartient à un autre compte. Allez à la page de votre compte et recommencez à partir de là.
error-store-down-title = Réessayez dans un instant
error-store-down-text = stepgate ne peut pas joindre ses données pour le moment, donc rien n’a été modifié. Attendez un instant et réessayez.
error-form-expired-title = Formulaire expiré
error-form-expired-text = Ce formulaire a expiré ou ne vient pas de stepgate, donc rien n’a été envoyé. Rouvrez la page et réessayez.
error-signed-out-title = Déconnecté
error-signed-out-text = Votre session est terminée. Reconnectez-vous.
error-link-expired-title = Lien expiré
error-link-expired-text = Ce lien n’est pas valide ou a expiré. Revenez à l’application et réessayez : elle vous enverra un nouveau lien.
error-cookie-title = Problème de cookie
error-not-signed-in-title = Non connecté
lang-unknown-title = Langue non disponible
lang-unknown-text = Le portail ne parle pas cette langue. Il s’affiche en anglais ou en français.

## Paramètres de sécurité

account-resume-now = Vous pouvez maintenant revenir à <strong>{ $app }</strong> et confirmer que c’est bien vous.
account-continue-to = Continuer vers { $app }
account-resume-add = Ajoutez une clé d’accès ci-dessous pour continuer vers <strong>{ $app }</strong> ; vous y reviendrez directement.
account-confirm-first = Pour ajouter ou supprimer un moyen de connexion, vous devez d’abord confirmer que c’est bien vous.
account-your-ways = Vos moyens de connexion
account-method = Moyen
account-strength = Robustesse
account-added = Ajouté
account-last-used = dernière utilisation { $when }
account-remove-label = Supprimer { $title } { $label }
account-nothing-yet = Rien pour l’instant.
account-change-password-title = Changer votre mot de passe
account-password-rules = Au moins { $min } caractères. Les mots de passe courants et ceux qui ont fuité sont refusés.
account-sign-out-others = Déconnecter mes autres sessions
account-change-password = Changer le mot de passe
account-add-a-way = Ajouter un moyen de connexion
account-passkey-hint = Résiste à l’hameçonnage : le choix le plus sûr.
account-add-security-key = Ajouter une clé de sécurité
account-email-codes = Codes par e-mail
account-sms-codes = Codes par SMS
account-send-verification = Envoyer un code de vérification
account-verification-code = Code de vérification envoyé
account-question = Question { $n }
account-answer = Réponse { $n }
account-save-questions = Enregistrer les questions de sécurité
account-recovery-codes = Codes de secours
account-recovery-hint = Des codes à usage unique pour les urgences, si vous perdez votre téléphone ou votre clé de sécurité. En générer de nouveaux annule les anciens.
account-generate-codes = Générer des codes de secours
demo-title = Démo : cet appareil
demo-hint = La démo de stepgate fait passer votre navigateur pour l’un de ces appareils (en production, l’état de l’appareil vient de votre UEM/EDR).
demo-save = Utiliser ce profil d’appareil
totp-title = Configurer une application d’authentification
totp-scan = Scannez le code avec votre application d’authentification, puis saisissez le code à 6 chiffres qu’elle affiche.
totp-cant-scan = Impossible de scanner ? Saisissez cette clé :
totp-code-from-app = Code de l’application
codes-title = Vos codes de secours
codes-lead = Conservez-les en lieu sûr. Chacun ne fonctionne qu’une fois. Ils ne sont affichés que maintenant.
codes-download = Télécharger en fichier texte
codes-print = Imprimer
codes-copy = Copier

## Sessions et appareils

sessions-title = Vos sessions
sessions-signed-in = Connexion
sessions-from = Depuis
sessions-last-active = Dernière activité
sessions-near = près de { $place }
sessions-level = Niveau
sessions-current = ce navigateur (session actuelle)
sessions-end = Terminer
sessions-end-label = Terminer la session sur { $browser } ouverte le { $when }
sessions-sign-out-everywhere = Se déconnecter partout
devices-title = Vos appareils
devices-device = Appareil
devices-state = État
devices-this-browser = ce navigateur
devices-remove-label = Supprimer { $name }
devices-managed = géré par votre organisation
devices-none = Aucun appareil enregistré.
devices-register = Enregistrer ce navigateur

## Mots de passe et première connexion

forgot-title = Mot de passe oublié ?
forgot-recovery-lead = Si vous avez enregistré des codes de secours lors de la création de votre compte, utilisez-en un pour choisir un nouveau mot de passe. Chaque code ne fonctionne qu’une fois.
forgot-by-email = Recevoir un code par e-mail
forgot-code-sent = Si { $user } a une adresse e-mail configurée pour la connexion, nous y avons envoyé un code. Il ne fonctionne qu’une fois, pendant quelques minutes.
forgot-code-from-email = Code reçu par e-mail
forgot-email-lead = Si vous avez configuré une adresse e-mail pour la connexion, nous pouvons y envoyer un code.
forgot-no-codes = Pas de codes de secours ?
forgot-no-codes-or-email = Pas de codes de secours ni d’e-mail ?
forgot-ask = Demandez à { $who } un lien de réinitialisation du mot de passe. Il peut vous en envoyer un qui ne fonctionne qu’une fois.
setpw-welcome-title = Bienvenue — choisissez un mot de passe
setpw-title = Choisissez un nouveau mot de passe
setpw-welcome-lead = Bonjour { $name }. Choisissez un mot de passe pour <strong>{ $user }</strong>, puis ajoutez une clé d’accès ou une application d’authentification pour terminer la configuration de votre compte.
setpw-lead = Choisissez un nouveau mot de passe pour <strong>{ $user }</strong>. Vous serez déconnecté partout ailleurs.
setpw-rules = Au moins { $min } caractères. Une longue phrase de quelques mots sans rapport entre eux est solide et facile à retenir. Les mots de passe courants et ceux qui ont fuité sont refusés.
setpw-submit-welcome = Enregistrer le mot de passe et continuer
setpw-submit = Enregistrer le nouveau mot de passe
setpw-link-once = Ce lien ne fonctionne qu’une fois. Il expire à <time datetime="{ $at }">{ $time }</time>.
welcome-title = Ajoutez un deuxième moyen de connexion
welcome-all-set = Tout est prêt, { $name }.
welcome-lead = Votre mot de passe est enregistré, { $name }. Ajoutez maintenant une clé d’accès ou une application d’authentification : vous l’utiliserez avec votre mot de passe pour vous connecter.
welcome-first-sign-in-lead = Bienvenue, { $name }. La connexion demande plus que votre mot de passe : ajoutez maintenant une clé d’accès ou une application d’authentification, puis utilisez-la pour terminer la connexion. Vous l’utiliserez désormais avec votre mot de passe.
welcome-passkey-title = Clé d’accès ou clé de sécurité (recommandé)
welcome-passkey-hint = Votre téléphone, votre ordinateur ou votre clé de sécurité confirme que c’est bien vous avec votre empreinte, votre visage ou votre code PIN. Personne ne peut vous la soutirer par la ruse.
welcome-totp-hint = Une application sur votre téléphone (comme Google Authenticator, Microsoft Authenticator ou 1Password) affiche un nouveau code à 6 chiffres toutes les 30 secondes.
welcome-skip = Passer pour l’instant

## Erreurs des formulaires de connexion

auth-no-match = Cela ne correspond pas. Vérifiez et réessayez.
auth-locked-until = { $wait } (à { $time } UTC). Si vous ne pouvez pas attendre, le support peut débloquer votre compte.
auth-replayed = Ce code a déjà été utilisé. Attendez le suivant.
auth-expired = Ce code a expiré. Demandez-en un nouveau.
auth-too-many-guesses = Trop d’essais erronés pour ce code. Demandez-en un nouveau.
auth-not-set-up = Vous n’avez pas de { $kind } configuré.
auth-disabled = Ce compte est désactivé. Contactez votre administrateur.
auth-account-locked = Ce compte est verrouillé après trop d’échecs. Le support peut le débloquer.
auth-rate-limited = Trop de codes demandés. Attendez quelques minutes.
auth-paused = Trop d’échecs : la connexion est suspendue. Réessayez { $minutes ->
    [one] dans une minute
   *[other] dans { $minutes } minutes
}.
auth-tries-left = { $n ->
    [one] Encore 1 essai
   *[other] Encore { $n } essais
} avant que la connexion soit suspendue pendant { $minutes ->
    [one] une minute
   *[other] { $minutes } minutes
}.

## Les pages propres de la passerelle

gateway-start-page-of = Aller à la page d’accueil de { $app }
gateway-bad-request-title = Cette adresse ne peut pas être ouverte
gateway-bad-request-text = stepgate a refusé cette requête : { $why }. Vérifiez le lien que vous avez suivi.
gateway-method-title = Cette requête n’est pas autorisée
gateway-method-text = stepgate ne transmet pas ce type de requête : { $why }.
gateway-misdirected-title = Adresse non desservie
gateway-misdirected-text = Cette adresse n’est pas desservie par stepgate. Vérifiez le lien, ou demandez à votre administrateur quelle adresse utiliser.
gateway-not-found-title = Page introuvable
gateway-not-found-text = Aucune application n’est configurée pour cette adresse. Vérifiez le lien, ou allez à la page de votre compte.
gateway-bad-gateway-title = L’application ne répond pas
gateway-bad-gateway-text = L’application derrière cette adresse est indisponible pour le moment. Vous êtes toujours connecté ; réessayez dans un instant.
gateway-timeout-title = L’application a mis trop de temps
gateway-timeout-text = L’application derrière cette adresse n’a pas répondu à temps. Vous êtes toujours connecté ; réessayez dans un instant.
gateway-unavailable-text = stepgate ne peut pas vérifier cette requête pour le moment, il ne l’a donc pas laissée passer. Réessayez dans un instant.

## Pages du portail

portal-not-found-text = Il n’y a pas de page à cette adresse. Vérifiez le lien, ou allez à la page de votre compte.
portal-method-title = Cette page ne peut pas être ouverte ainsi
portal-method-text = Cette adresse sert à un formulaire, pas à être ouverte directement. Allez à la page de votre compte et recommencez à partir de là.
signed-out = Vous êtes déconnecté.
signed-out-everywhere = Vous êtes déconnecté sur tous vos appareils.
browser-on = { $browser } sur { $os }
browser-unknown-on = Un navigateur sur { $os }
browser-unknown = Un navigateur inconnu
notice-totp = Application d’authentification ajoutée.
notice-webauthn = Clé d’accès ajoutée.
notice-contact = Vérifié et ajouté.
notice-questions = Questions de sécurité enregistrées.
notice-removed = Supprimé.
notice-password = Mot de passe changé.
notice-password-others = Mot de passe changé. Vos autres sessions ont été déconnectées.
notice-device = Profil d’appareil de démo changé.
notice-confirmed = C’est confirmé. Rien n’a encore été modifié : refaites votre modification.
totp-not-added = L’application d’authentification n’a pas été ajoutée : { $why }
codes-file-heading = Codes de secours de { $user } (chacun ne fonctionne qu’une fois)
password-not-same = Les deux mots de passe sont différents. Saisissez deux fois le même mot de passe.
password-not-changed = Votre mot de passe n’a pas été changé. Choisissez-en un autre : { $why }.
stepup-code-sent = Nous avons envoyé un code à { $address }.
stepup-one-more-step = C’est fait. Une étape de plus est nécessaire.
confirmed-title = Confirmé
confirmed-action = Confirmé. Votre demande « { $what } » n’a pas encore été envoyée : revenez en arrière et appuyez de nouveau sur le bouton.
confirmed-request = Confirmé. Votre demande n’a pas encore été envoyée : revenez en arrière et appuyez de nouveau sur le bouton.
back-to-app = Retour à { $app }
login-wrong = Nom d’utilisateur ou mot de passe incorrect.
link-disabled-title = Compte désactivé
link-expired-title = Ce lien a expiré
link-expired-text = Ce lien a expiré ou a déjà été utilisé. Chaque lien ne fonctionne qu’une fois. Demandez-en un nouveau à votre administrateur.
password-choose-another = Choisissez un autre mot de passe : { $why }.
forgot-no-match = Ce nom d’utilisateur et ce code de secours ne correspondent pas. Vérifiez les deux et réessayez.
forgot-type-username = Saisissez votre nom d’utilisateur, puis demandez un code.
forgot-code-no-match = Ce code ne correspond pas ou a expiré. Vérifiez-le, ou demandez-en un nouveau.
webauthn-page-expired = Cette page a expiré. Rechargez-la et réessayez.
webauthn-not-this-account = Cette clé d’accès n’appartient pas à ce compte. Utilisez une clé d’accès ajoutée ici, ou un autre moyen de connexion.
webauthn-prompt-expired = La demande de clé d’accès a expiré. Réessayez.
webauthn-session-expired = Votre session ou cette page a expiré. Revenez à l’application et réessayez.
webauthn-invitation-expired = Cette page a expiré. Utilisez de nouveau votre lien d’invitation, ou demandez-en un nouveau.
webauthn-signed-out = Vous êtes déconnecté. Reconnectez-vous, puis ajoutez votre clé d’accès.
webauthn-other-account = Cette clé d’accès appartient à un autre compte. Utilisez votre propre clé d’accès, ou un autre moyen.
handoff-title = Lien de connexion non valide
handoff-text = Ce lien de connexion a expiré, a déjà été utilisé, ou était destiné à un autre navigateur. Rouvrez l’application pour continuer.

## Mots affichés par les scripts de la page (webauthn.js, portal.js)

js-server-error = Un problème est survenu de notre côté. Réessayez dans un instant.
js-not-allowed-register = La clé d’accès n’a pas été ajoutée : la demande a été annulée ou a expiré, ou votre appareil n’a pas pu confirmer que c’est bien vous. Réessayez quand vous serez prêt.
js-not-allowed = Aucune clé d’accès n’a été utilisée : la demande a été annulée ou a expiré, votre appareil n’a pas pu confirmer que c’est bien vous, ou il n’a pas de clé d’accès pour ce compte. Réessayez, ou utilisez un autre moyen de connexion.
js-invalid-state-register = Cet appareil contient déjà une clé d’accès pour votre compte. Utilisez-la, ou ajoutez une clé d’accès sur un autre appareil ou une clé de sécurité.
js-invalid-state = Votre clé d’accès n’a pas pu être utilisée sur cet appareil. Réessayez, ou utilisez un autre moyen de connexion.
js-abort = La demande de clé d’accès a été fermée. Réessayez quand vous serez prêt.
js-security = Les clés d’accès ne peuvent pas être utilisées à cette adresse. Ouvrez le site à son adresse habituelle et réessayez.
js-not-supported = Ce navigateur ou cet appareil ne peut pas utiliser ce type de clé d’accès. Essayez un autre navigateur, ou utilisez un autre moyen de connexion.
js-constraint = Votre appareil n’a pas pu confirmer que c’est bien vous : configurez un verrouillage d’écran, une empreinte ou un code PIN, ou utilisez un autre moyen de connexion.
js-network = Impossible de joindre le serveur. Vérifiez votre connexion et réessayez.
js-other = Un problème est survenu avec la clé d’accès. Réessayez, ou utilisez un autre moyen de connexion.
js-follow-prompt = Suivez les instructions de votre navigateur…
js-taking-you-on = C’est fait. Nous vous emmenons plus loin…
js-copy-unavailable = La copie n’est pas disponible ici : sélectionnez les codes et copiez-les.
js-copied = Copié.
js-copy-failed = La copie n’a pas fonctionné : sélectionnez les codes et copiez-les.
js-no-passkeys = Ce navigateur ne prend pas en charge les clés d’accès. Mettez-le à jour ou utilisez un autre navigateur, ou un autre moyen de connexion.
js-try-again-now = Vous pouvez réessayer maintenant.
