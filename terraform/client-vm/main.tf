locals {
  vms = { for i in var.vm_indices : "${var.resource_prefix}-vm-${i}" => i }

  tags = {
    ResourcePrefix = var.resource_prefix
    Project        = "lablink"
    Deployment     = var.deployment
    Environment    = var.environment
    ManagedBy      = "terraform"
  }
}

resource "aws_security_group" "vms" {
  # checkov:skip=CKV_AWS_24:The allocator passes its own address (/32) as ssh_cidr_blocks; anywhere only when ALLOCATOR_PUBLIC_IP is unknown.
  name        = "${var.resource_prefix}-sg"
  description = "LabLink client VMs: SSH in, everything out"
  tags        = local.tags

  ingress {
    description = "SSH from the allocator (reboots, participants' files); key login only"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = var.ssh_cidr_blocks
  }

  egress {
    description = "Image pulls, package mirrors, the allocator, Chrome Remote Desktop"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_iam_role" "vm" {
  name = "${var.resource_prefix}-vm-role"
  tags = local.tags

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_instance_profile" "vm" {
  name = "${var.resource_prefix}-instance-profile"
  role = aws_iam_role.vm.name
}

resource "tls_private_key" "vm" {
  algorithm = "RSA"
  rsa_bits  = 4096
}

resource "aws_key_pair" "vm" {
  key_name   = "${var.resource_prefix}-keypair"
  public_key = tls_private_key.vm.public_key_openssh
  tags       = local.tags
}

resource "time_static" "start" {
  for_each = local.vms
}

resource "aws_instance" "vm" {
  for_each               = local.vms
  ami                    = var.client_ami_id
  instance_type          = var.machine_type
  key_name               = aws_key_pair.vm.key_name
  vpc_security_group_ids = [aws_security_group.vms.id]
  iam_instance_profile   = aws_iam_instance_profile.vm.name
  tags                   = merge(local.tags, { Name = each.key })

  # The boot script carries the token, URL and agent checksum: a change to them (a new
  # allocator version) must not stop and restart VMs participants are using.
  lifecycle {
    ignore_changes = [user_data_base64]
  }

  root_block_device {
    volume_size = var.root_volume_gb
    volume_type = "gp3"
  }

  # IMDSv2 only (session tokens); cloud-init is the only reader of instance metadata. The
  # user data holds the VM's credential: one hop keeps bridged containers out, and the boot
  # script blocks every other account on the host (the desktop container shares its network).
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  # Run the boot script on every boot, not only the first (a rebooted VM re-registers).
  user_data_base64 = base64gzip(join("\n", [
    "Content-Type: multipart/mixed; boundary=\"LABLINK\"",
    "MIME-Version: 1.0",
    "",
    "--LABLINK",
    "Content-Type: text/cloud-config; charset=\"us-ascii\"",
    "",
    "cloud_final_modules:",
    "- [scripts-user, always]",
    "",
    "--LABLINK",
    "Content-Type: text/x-shellscript; charset=\"us-ascii\"",
    "",
    templatefile("${path.module}/user_data.sh.tftpl", {
      vm_name          = each.key
      allocator_url    = var.allocator_url
      api_token        = var.api_tokens[each.key]
      token_in_env     = var.credential_in_environment
      agent_sha256     = var.agent_sha256
      image_name       = var.image_name
      repository       = var.repository == null ? "" : var.repository
      subject_software = var.subject_software
      gpu_support      = var.gpu_support
      log_group        = var.cloud_init_output_log_group
      startup_on_error = var.startup_on_error
      startup_script   = var.startup_script_b64
    }),
    "--LABLINK--",
  ]))
}

resource "time_static" "end" {
  for_each   = local.vms
  depends_on = [aws_instance.vm]
}
