# The server's environment besides the variables main.tf sets one by one: the AUTH_* of
# var.auth (JWT joins) and var.extra_env (whose validation keeps the two apart). A file of its
# own, with no resource, so that deploy/tests can evaluate outputs.tf's deploy_settings with
# `terraform console` over variables.tf and this file alone, offline.

locals {
  # JWT joins (var.auth): the server's AUTH_* variables, the optional ones only when set.
  auth_env = var.auth == null ? {} : { for name, value in {
    AUTH_JWKS_URL       = var.auth.jwks_url
    AUTH_ISSUER         = var.auth.issuer
    AUTH_AUDIENCE       = var.auth.audience
    AUTH_USERNAME_CLAIM = var.auth.username_claim
    AUTH_ROOMS_CLAIM    = var.auth.rooms_claim
  } : name => value if value != null }
  # What the server gets besides the variables set one by one below (extra_env may not
  # overlap: its validation).
  server_env = merge(local.auth_env, var.extra_env)
}
