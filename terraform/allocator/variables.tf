# Inputs of the allocator deployment. See README.md and example.tfvars.

variable "region" {
  description = "AWS region of the allocator"
  type        = string
  default     = "us-west-2"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+$", var.region))
    error_message = "region must be an AWS region name such as us-west-2."
  }
}

variable "deployment_name" {
  description = "Name of this deployment, part of every resource name"
  type        = string
  default     = "lablink"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", var.deployment_name)) && length(var.deployment_name) <= 32
    error_message = "deployment_name: at most 32 lowercase letters, digits and hyphens, starting and ending with a letter or digit."
  }
}

variable "environment" {
  description = "dev, test, ci-test or prod; must equal `environment` in the config file"
  type        = string

  validation {
    condition     = contains(["dev", "test", "ci-test", "prod"], var.environment)
    error_message = "environment must be one of dev, test, ci-test, prod."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the allocator"
  type        = string
  default     = "t3.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be an EC2 instance type such as t3.large."
  }
}

variable "availability_zone" {
  description = "Availability zone of the allocator and its data volume; \"\" = the first (sorted) zone of the region offering instance_type"
  type        = string
  default     = ""

  validation {
    condition     = var.availability_zone == "" || can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+[a-z]$", var.availability_zone))
    error_message = "availability_zone must be empty or a zone name such as us-west-2a."
  }
}

variable "ami_id" {
  description = "AMI of the allocator; \"\" = the latest Canonical Ubuntu 24.04 LTS (amd64)"
  type        = string
  default     = ""

  validation {
    condition     = var.ami_id == "" || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be empty or an AMI id such as ami-0123456789abcdef0."
  }
}

variable "lablink_version" {
  description = "LabLink release to install, without the leading v (e.g. 0.1.0)"
  type        = string

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+(-[0-9A-Za-z.-]+)?$", var.lablink_version))
    error_message = "lablink_version must be a release version such as 0.1.0 (no leading v)."
  }
}

variable "release_base_url" {
  description = "Where releases are downloaded from: <release_base_url>/v<version>/<asset>"
  type        = string
  default     = "https://github.com/talmolab/lablink/releases/download"

  validation {
    condition     = can(regex("^https://[^\\s'\"\\\\]*[^\\s'\"\\\\/]$", var.release_base_url))
    error_message = "release_base_url must be an https:// URL without a trailing slash, quotes or spaces."
  }
}

variable "lablink_sha256" {
  description = "SHA-256 of the release asset lablink-x86_64-unknown-linux-musl (the allocator)"
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.lablink_sha256))
    error_message = "lablink_sha256 must be 64 lowercase hexadecimal digits (sha256sum output)."
  }
}

variable "agent_sha256" {
  description = "SHA-256 of the release asset lablink-x86_64-unknown-linux-gnu (the agent build served to VMs)"
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.agent_sha256))
    error_message = "agent_sha256 must be 64 lowercase hexadecimal digits (sha256sum output)."
  }
}

variable "config_file" {
  description = "Path of the config.yaml to install as /etc/lablink/config.yaml"
  type        = string

  validation {
    condition     = fileexists(var.config_file)
    error_message = "config_file must name an existing file."
  }
}

variable "admin_password" {
  description = "Admin password; \"\" = generated on first start (see README). Visible to whoever can read the instance's user data or this state."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition = var.admin_password == "" || (
      length(var.admin_password) >= 12 &&
      !can(regex("[\\r\\n]", var.admin_password)) &&
      !contains(["MISSING", "CHANGEME", "PASSWORD"], upper(var.admin_password)) &&
      !startswith(upper(var.admin_password), "PLACEHOLDER")
    )
    error_message = "admin_password must be empty (generated) or at least 12 characters on one line, and not a placeholder."
  }
}

variable "eip_strategy" {
  description = "persistent: use the existing Elastic IP tagged Name=<deployment_name>-eip-<environment>; dynamic: allocate one with the deployment"
  type        = string
  default     = "dynamic"

  validation {
    condition     = contains(["persistent", "dynamic"], var.eip_strategy)
    error_message = "eip_strategy must be persistent or dynamic."
  }
}

variable "domain_name" {
  description = "Fully qualified name of the allocator (e.g. lablink.example.org); \"\" = no DNS, reached by IP"
  type        = string
  default     = ""

  validation {
    condition     = var.domain_name == "" || (length(var.domain_name) <= 253 && can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$", var.domain_name)))
    error_message = "domain_name must be empty or a lowercase host name with at least two labels, such as lablink.example.org."
  }
}

variable "create_dns_record" {
  description = "Create the A record of domain_name in Route 53; false when the name is managed elsewhere"
  type        = bool
  default     = true
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of domain_name; \"\" = the public zone named after domain_name minus its first label"
  type        = string
  default     = ""

  validation {
    condition     = var.route53_zone_id == "" || can(regex("^Z[0-9A-Z]{1,31}$", var.route53_zone_id))
    error_message = "route53_zone_id must be empty or a hosted zone id such as Z0123456789ABCDEFGHIJ."
  }
}

variable "tls" {
  description = "none: lablink serves plain HTTP on port 5000; caddy: Caddy terminates HTTPS (Let's Encrypt) on 443 and proxies to lablink on 127.0.0.1:5000 (needs domain_name)"
  type        = string
  default     = "none"

  validation {
    condition     = contains(["none", "caddy"], var.tls)
    error_message = "tls must be none or caddy."
  }
}

variable "acme_email" {
  description = "E-mail of the Let's Encrypt account (tls = caddy); \"\" = none"
  type        = string
  default     = ""

  validation {
    condition     = var.acme_email == "" || can(regex("^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}$", var.acme_email))
    error_message = "acme_email must be empty or an e-mail address."
  }
}

variable "ssh_cidr_blocks" {
  description = "Networks allowed to SSH into the allocator; [] = no SSH ingress"
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_cidr_blocks : can(cidrhost(c, 0)) && !can(regex(":", c))])
    error_message = "ssh_cidr_blocks must be IPv4 CIDR blocks such as 203.0.113.0/24."
  }
}

variable "terraform_version" {
  description = "Terraform installed on the allocator to launch the client VMs (>= 1.6)"
  type        = string
  default     = "1.11.4"

  validation {
    condition     = can(regex("^1\\.([6-9]|[1-9][0-9])\\.[0-9]+$", var.terraform_version))
    error_message = "terraform_version must be a Terraform 1.x release, 1.6.0 or later, such as 1.11.4."
  }
}

variable "terraform_sha256" {
  description = "SHA-256 of terraform_<terraform_version>_linux_amd64.zip (HashiCorp's SHA256SUMS); the default is that of 1.11.4"
  type        = string
  default     = "1ce994251c00281d6845f0f268637ba50c0005657eb3cf096b92f753b42ef4dc"

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.terraform_sha256))
    error_message = "terraform_sha256 must be 64 lowercase hexadecimal digits."
  }
}

variable "client_resource_prefix" {
  description = "Name prefix of the client VM resources the allocator may create; \"\" = the allocator's own rule, <machine.software>-lablink-client-<environment> from the config file"
  type        = string
  default     = ""

  validation {
    condition     = var.client_resource_prefix == "" || can(regex("^[A-Za-z0-9][A-Za-z0-9_+=,.@-]{2,46}$", var.client_resource_prefix))
    error_message = "client_resource_prefix must be empty or 3 to 47 characters allowed in IAM names (letters, digits, _+=,.@-)."
  }
}

variable "root_volume_gb" {
  description = "Size of the root volume (system, Terraform providers cache)"
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_gb >= 10 && var.root_volume_gb <= 1024
    error_message = "root_volume_gb must be between 10 and 1024."
  }
}

variable "data_volume_gb" {
  description = "Size of the separate volume mounted at /var/lib/lablink (store, agents' token, client VM state); it outlives instance replacements"
  type        = number
  default     = 20

  validation {
    condition     = var.data_volume_gb >= 1 && var.data_volume_gb <= 1024
    error_message = "data_volume_gb must be between 1 and 1024."
  }
}
