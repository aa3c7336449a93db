# No backend block: locally the state is a file next to this module; CI writes a
# backend.tf (S3) before `terraform init`.
terraform {
  required_version = ">= 1.5, < 2.0"
  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Written against 5.x; nothing used here changed in 6.x, which the client-vm module
      # requires, so one plugin cache can serve both.
      version = ">= 5.0, < 7.0"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "lablink"
      Deployment  = var.deployment_name
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
