# terraform apply -var-file=example.tfvars (copy it first; the checksums below are placeholders)

region          = "us-west-2"
deployment_name = "lablink"
environment     = "prod"

# The release to install and the SHA-256 of its two assets (sha256sum of each, or the
# release's checksum file): lablink-x86_64-unknown-linux-musl, lablink-x86_64-unknown-linux-gnu.
lablink_version = "0.1.0"
lablink_sha256  = "0000000000000000000000000000000000000000000000000000000000000000"
agent_sha256    = "0000000000000000000000000000000000000000000000000000000000000000"

# Installed unchanged as /etc/lablink/config.yaml; `environment` in it must equal the one above.
config_file = "config.yaml"

# HTTPS with a Let's Encrypt certificate; the A record goes into the Route 53 zone
# example.org (looked up) unless route53_zone_id names another.
domain_name = "lablink.example.org"
tls         = "caddy"
acme_email  = "admin@example.org"

# Keep the address across `terraform destroy` by allocating it yourself, tagged
# Name=lablink-eip-prod, and choosing persistent.
eip_strategy = "dynamic"

# SSH only from your own network (the key is in `terraform output -raw private_key_pem`).
ssh_cidr_blocks = ["203.0.113.0/24"]

# Leave unset to have one generated on first start, or pass it without writing it down:
# TF_VAR_admin_password=… terraform apply -var-file=…
# admin_password = ""
