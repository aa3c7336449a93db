# Written by the allocator into lablink.tfvars.json before every run; never edited by hand.

variable "vm_indices" {
  description = "Numbers of the VMs that should exist (<resource_prefix>-vm-<n>)"
  type        = list(number)
}

variable "deployment" {
  description = "The deployment's name (the allocator's deployment_name), tagged on every resource"
  type        = string
}

variable "environment" {
  description = "dev, test, ci-test or prod, tagged on every resource"
  type        = string
}

variable "allocator_url" {
  description = "URL the VMs reach the allocator at"
  type        = string
  sensitive   = true
}

variable "ssh_cidr_blocks" {
  description = "Sources allowed to SSH into the VMs: the allocator's address when it is known"
  type        = list(string)
}

variable "api_tokens" {
  description = "Each VM's own credential for the allocator's agent API, by VM name"
  type        = map(string)
  sensitive   = true
}

variable "credential_in_environment" {
  description = "Also give the container its credential as API_TOKEN (upstream's client images read only that; the desktop user can read it then)"
  type        = bool
  default     = false
}

variable "agent_sha256" {
  description = "SHA-256 of the lablink executable served at <allocator_url>/download/lablink"
  type        = string
}

variable "machine_type" {
  type = string
}

variable "image_name" {
  description = "Container image with the desktop and the workshop software"
  type        = string
}

variable "repository" {
  description = "Git repository cloned onto each desktop, or null"
  type        = string
  default     = null
}

variable "client_ami_id" {
  type = string
}

variable "resource_prefix" {
  type = string
}

variable "subject_software" {
  type = string
}

variable "gpu_support" {
  type = bool
}

variable "cloud_init_output_log_group" {
  type = string
}

variable "region" {
  type = string
}

variable "startup_on_error" {
  type = string
}

variable "startup_script_b64" {
  description = "The lab's custom startup script, base64 (empty: none); the agent runs it in the container"
  type        = string
}

variable "root_volume_gb" {
  type    = number
  default = 80
}
