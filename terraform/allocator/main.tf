locals {
  name = "${var.deployment_name}-allocator-${var.environment}"

  # The config file is installed unchanged. Terraform reads the few values that decide what
  # the allocator's own Terraform runs create, so the instance role allows exactly that:
  # the same defaults as `lablink serve` when a key is absent.
  config_text        = file(var.config_file)
  config             = yamldecode(local.config_text)
  config_environment = coalesce(try(tostring(local.config.environment), null), "prod")
  config_software    = coalesce(try(tostring(local.config.machine.software), null), "sleap")
  config_deployment  = coalesce(try(tostring(local.config.deployment_name), null), "lablink")
  config_bucket      = coalesce(try(tostring(local.config.bucket_name), null), "tf-state-lablink-allocator-bucket")
  client_region      = coalesce(try(tostring(local.config.app.region), null), "us-west-2")
  client_state_in_s3 = try(tostring(local.config.provision.terraform_backend), "local") == "s3"

  # src/provision/terraform/settings.rs names every client resource <software>-lablink-client-<env>-…
  client_prefix = var.client_resource_prefix != "" ? var.client_resource_prefix : "${local.config_software}-lablink-client-${local.config_environment}"

  ami_id = var.ami_id != "" ? var.ami_id : data.aws_ami.ubuntu[0].id

  # Regular zones of the region (not Local or Wavelength Zones) offering the instance type.
  # Sorted, so the pick is stable between plans (AWS names new zones with later letters):
  # the data volume must stay in this zone. Set availability_zone to pin it outright.
  availability_zones = sort([
    for zone in data.aws_ec2_instance_type_offerings.allocator.locations : zone
    if can(regex("^${var.region}[a-z]$", zone))
  ])
  availability_zone = var.availability_zone != "" ? var.availability_zone : try(local.availability_zones[0], "")

  # Both strategies give an address known before the instance is created (a dynamic EIP
  # is allocated first: it depends on nothing), so it can go into the user data. Reading
  # public-ipv4 from the instance metadata at boot would race the association and could
  # return the temporary address the instance had before it.
  public_ip         = var.eip_strategy == "persistent" ? data.aws_eip.persistent[0].public_ip : aws_eip.dynamic[0].public_ip
  eip_allocation_id = var.eip_strategy == "persistent" ? data.aws_eip.persistent[0].id : aws_eip.dynamic[0].id

  # What agents and browsers use; also decides the Secure flag of the admin cookie.
  allocator_url = (
    var.tls == "caddy" ? "https://${var.domain_name}" :
    var.domain_name != "" ? "http://${var.domain_name}:5000" :
    "http://${local.public_ip}:5000"
  )
  # Behind Caddy lablink answers on loopback only; without TLS it faces the network.
  listen = var.tls == "caddy" ? "127.0.0.1:5000" : "0.0.0.0:5000"

  manage_dns    = var.domain_name != "" && var.create_dns_record
  domain_labels = split(".", var.domain_name)
  parent_domain = join(".", slice(local.domain_labels, 1, length(local.domain_labels)))

  web_ingress = var.tls == "caddy" ? [
    { port = 80, description = "HTTP for ACME challenges and the redirect to HTTPS", cidr_blocks = ["0.0.0.0/0"] },
    { port = 443, description = "HTTPS to Caddy", cidr_blocks = ["0.0.0.0/0"] },
    ] : [
    { port = 5000, description = "LabLink over plain HTTP", cidr_blocks = ["0.0.0.0/0"] },
  ]
  ssh_ingress = length(var.ssh_cidr_blocks) > 0 ? [
    { port = 22, description = "SSH for the administrators", cidr_blocks = var.ssh_cidr_blocks },
  ] : []

  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    release_url        = "${var.release_base_url}/v${var.lablink_version}"
    lablink_sha256     = var.lablink_sha256
    agent_sha256       = var.agent_sha256
    terraform_version  = var.terraform_version
    terraform_sha256   = var.terraform_sha256
    config_b64         = base64encode(local.config_text)
    admin_password_b64 = base64encode(var.admin_password)
    listen             = local.listen
    allocator_url      = local.allocator_url
    public_ip          = local.public_ip
    tls                = var.tls
    domain_name        = var.domain_name
    acme_email         = var.acme_email
    data_volume_id     = aws_ebs_volume.data.id
    data_volume_serial = replace(aws_ebs_volume.data.id, "-", "")
  })

  partition = data.aws_partition.current.partition
  account   = data.aws_caller_identity.current.account_id
  ec2_arn   = "arn:${local.partition}:ec2:${local.client_region}:${local.account}"
  iam_arn   = "arn:${local.partition}:iam::${local.account}"
}

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

data "aws_ami" "ubuntu" {
  count       = var.ami_id == "" ? 1 : 0
  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

data "aws_ec2_instance_type_offerings" "allocator" {
  location_type = "availability-zone"

  filter {
    name   = "instance-type"
    values = [var.instance_type]
  }
}

# The client VMs the allocator launches go into the default VPC too.
data "aws_vpc" "default" {
  default = true
}

data "aws_subnet" "allocator" {
  vpc_id            = data.aws_vpc.default.id
  availability_zone = local.availability_zone
  default_for_az    = true

  lifecycle {
    precondition {
      condition     = local.availability_zone != ""
      error_message = "No availability zone of ${var.region} offers ${var.instance_type}; choose another instance_type or set availability_zone."
    }
  }
}

resource "tls_private_key" "allocator" {
  algorithm = "RSA"
  rsa_bits  = 4096
}

resource "aws_key_pair" "allocator" {
  key_name   = "${var.deployment_name}-keypair-${var.environment}"
  public_key = tls_private_key.allocator.public_key_openssh
}

resource "aws_security_group" "allocator" {
  name        = "${var.deployment_name}-allocator-sg-${var.environment}"
  description = "LabLink allocator: web from anywhere, SSH from admin networks"
  vpc_id      = data.aws_vpc.default.id

  dynamic "ingress" {
    for_each = concat(local.web_ingress, local.ssh_ingress)
    content {
      description = ingress.value.description
      from_port   = ingress.value.port
      to_port     = ingress.value.port
      protocol    = "tcp"
      cidr_blocks = ingress.value.cidr_blocks
    }
  }

  # Terraform providers, releases, Let's Encrypt, the AWS APIs and SSH to the client VMs.
  egress {
    description = "Everything out"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# The allocator's Terraform launches and destroys the client pool with this role. It can
# create only resources named (IAM) or tagged (EC2) with the client prefix, touch only
# those afterwards, and the IAM roles it creates stay empty: it has no permission to put
# or attach a policy, so passing them to EC2 grants the VMs nothing.
data "aws_iam_policy_document" "allocator" {
  # Describe calls cannot be narrowed to resources.
  statement {
    sid       = "Describe"
    actions   = ["ec2:Describe*"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [local.client_region]
    }
  }

  # An instance may only be started carrying ResourcePrefix = the client prefix (the
  # client-vm module tags every instance so), which the statements below then require.
  statement {
    sid       = "RunClientInstances"
    actions   = ["ec2:RunInstances"]
    resources = ["${local.ec2_arn}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/ResourcePrefix"
      values   = [local.client_prefix]
    }
  }

  # The other resources a launch touches: the AMI, the default subnet, the interface and
  # volume created with the instance, its security group and the pool's key pair.
  statement {
    sid     = "RunInstancesWith"
    actions = ["ec2:RunInstances"]
    resources = [
      "arn:${local.partition}:ec2:${local.client_region}::image/*",
      "${local.ec2_arn}:subnet/*",
      "${local.ec2_arn}:network-interface/*",
      "${local.ec2_arn}:volume/*",
      "${local.ec2_arn}:security-group/*",
      "${local.ec2_arn}:key-pair/${local.client_prefix}-*",
    ]
  }

  # Tags may be set by the calls that create the pool's resources, not on anything else.
  statement {
    sid     = "TagOnCreate"
    actions = ["ec2:CreateTags"]
    resources = [
      "${local.ec2_arn}:instance/*",
      "${local.ec2_arn}:volume/*",
      "${local.ec2_arn}:network-interface/*",
      "${local.ec2_arn}:security-group/*",
      "${local.ec2_arn}:key-pair/*",
    ]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances", "CreateSecurityGroup", "ImportKeyPair"]
    }
  }

  # Afterwards: only what carries the prefix tag. Stop/start are what Terraform does to
  # change an instance type in place (reboots go over SSH, not through the API).
  statement {
    sid = "ManageClientResources"
    actions = [
      "ec2:TerminateInstances",
      "ec2:StopInstances",
      "ec2:StartInstances",
      "ec2:ModifyInstanceAttribute",
      "ec2:ModifyInstanceMetadataOptions",
      "ec2:DeleteSecurityGroup",
      "ec2:AuthorizeSecurityGroupIngress",
      "ec2:AuthorizeSecurityGroupEgress",
      "ec2:RevokeSecurityGroupIngress",
      "ec2:RevokeSecurityGroupEgress",
      "ec2:ModifySecurityGroupRules",
      "ec2:UpdateSecurityGroupRuleDescriptionsIngress",
      "ec2:UpdateSecurityGroupRuleDescriptionsEgress",
      "ec2:CreateTags",
      "ec2:DeleteTags",
    ]
    resources = [
      "${local.ec2_arn}:instance/*",
      "${local.ec2_arn}:security-group/*",
      "${local.ec2_arn}:key-pair/${local.client_prefix}-*",
    ]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/ResourcePrefix"
      values   = [local.client_prefix]
    }
  }

  # Rules carry no tags of their own; the group they belong to must still pass the
  # statement above.
  statement {
    sid = "ClientSecurityGroupRules"
    actions = [
      "ec2:AuthorizeSecurityGroupIngress",
      "ec2:AuthorizeSecurityGroupEgress",
      "ec2:RevokeSecurityGroupIngress",
      "ec2:RevokeSecurityGroupEgress",
      "ec2:ModifySecurityGroupRules",
      "ec2:UpdateSecurityGroupRuleDescriptionsIngress",
      "ec2:UpdateSecurityGroupRuleDescriptionsEgress",
    ]
    resources = ["${local.ec2_arn}:security-group-rule/*"]
  }

  statement {
    sid       = "CreateClientSecurityGroup"
    actions   = ["ec2:CreateSecurityGroup"]
    resources = ["${local.ec2_arn}:security-group/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/ResourcePrefix"
      values   = [local.client_prefix]
    }
  }

  statement {
    sid       = "CreateSecurityGroupInVpc"
    actions   = ["ec2:CreateSecurityGroup"]
    resources = ["${local.ec2_arn}:vpc/*"]
  }

  # Key pair ARNs carry the name, so the prefix alone confines them.
  statement {
    sid       = "ClientKeyPair"
    actions   = ["ec2:ImportKeyPair", "ec2:DeleteKeyPair"]
    resources = ["${local.ec2_arn}:key-pair/${local.client_prefix}-*"]
  }

  statement {
    sid = "ClientRole"
    actions = [
      "iam:CreateRole",
      "iam:DeleteRole",
      "iam:GetRole",
      "iam:UpdateRole",
      "iam:UpdateAssumeRolePolicy",
      "iam:TagRole",
      "iam:UntagRole",
      "iam:ListRoleTags",
      "iam:ListRolePolicies",
      "iam:ListAttachedRolePolicies",
      "iam:ListInstanceProfilesForRole",
    ]
    resources = ["${local.iam_arn}:role/${local.client_prefix}-*"]
  }

  statement {
    sid = "ClientInstanceProfile"
    actions = [
      "iam:CreateInstanceProfile",
      "iam:DeleteInstanceProfile",
      "iam:GetInstanceProfile",
      "iam:AddRoleToInstanceProfile",
      "iam:RemoveRoleFromInstanceProfile",
      "iam:TagInstanceProfile",
      "iam:UntagInstanceProfile",
      "iam:ListInstanceProfileTags",
    ]
    resources = ["${local.iam_arn}:instance-profile/${local.client_prefix}-*"]
  }

  # Needed by RunInstances with the pool's profile and by AddRoleToInstanceProfile (which
  # names no service, hence no iam:PassedToService condition). These roles hold no policy.
  statement {
    sid       = "PassClientRole"
    actions   = ["iam:PassRole"]
    resources = ["${local.iam_arn}:role/${local.client_prefix}-*"]
  }

  # provision.terraform_backend: s3 keeps the pool's state under
  # <bucket>/<deployment>/<environment>/client/ with upstream's DynamoDB lock table.
  dynamic "statement" {
    for_each = local.client_state_in_s3 ? ["s3"] : []
    content {
      sid       = "ClientStateBucket"
      actions   = ["s3:ListBucket"]
      resources = ["arn:${local.partition}:s3:::${local.config_bucket}"]
    }
  }

  dynamic "statement" {
    for_each = local.client_state_in_s3 ? ["s3"] : []
    content {
      sid       = "ClientStateObjects"
      actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
      resources = ["arn:${local.partition}:s3:::${local.config_bucket}/${local.config_deployment}/${local.config_environment}/client/*"]
    }
  }

  dynamic "statement" {
    for_each = local.client_state_in_s3 ? ["s3"] : []
    content {
      sid       = "ClientStateLock"
      actions   = ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"]
      resources = ["arn:${local.partition}:dynamodb:${local.client_region}:${local.account}:table/lock-table"]
    }
  }
}

resource "aws_iam_role" "allocator" {
  name        = "${local.name}-role"
  description = "LabLink allocator ${var.deployment_name} (${var.environment}): launches the client VM pool"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy" "allocator" {
  name   = "launch-client-vms"
  role   = aws_iam_role.allocator.id
  policy = data.aws_iam_policy_document.allocator.json
}

resource "aws_iam_instance_profile" "allocator" {
  name = "${local.name}-profile"
  role = aws_iam_role.allocator.name
}

# The store, the agents' token and (with the local backend) the client pool's Terraform
# state live here, not on the root volume: a new release or config replaces the instance
# (user_data_replace_on_change), and the pool must not be forgotten when it does.
resource "aws_ebs_volume" "data" {
  availability_zone = data.aws_subnet.allocator.availability_zone
  size              = var.data_volume_gb
  type              = "gp3"
  encrypted         = true
  tags              = { Name = "${local.name}-data" }
}

resource "aws_instance" "allocator" {
  ami                         = local.ami_id
  instance_type               = var.instance_type
  subnet_id                   = data.aws_subnet.allocator.id
  vpc_security_group_ids      = [aws_security_group.allocator.id]
  iam_instance_profile        = aws_iam_instance_profile.allocator.name
  key_name                    = aws_key_pair.allocator.key_name
  user_data_base64            = base64gzip(local.user_data)
  user_data_replace_on_change = true
  tags                        = { Name = local.name }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size           = var.root_volume_gb
    volume_type           = "gp3"
    encrypted             = true
    delete_on_termination = true
  }

  lifecycle {
    # A newer Ubuntu image must not replace a running allocator on the next apply; move to
    # one deliberately with `terraform apply -replace=aws_instance.allocator`.
    ignore_changes = [ami]

    precondition {
      condition     = var.tls != "caddy" || var.domain_name != ""
      error_message = "tls = \"caddy\" needs domain_name: Let's Encrypt issues certificates for names, not addresses."
    }

    precondition {
      condition     = local.config_environment == var.environment
      error_message = "${var.config_file} has environment ${local.config_environment} (prod when absent) but this deployment is ${var.environment}; make them equal, the allocator names its client VMs after it."
    }

    precondition {
      condition     = var.terraform_version == "1.11.4" || var.terraform_sha256 != "1ce994251c00281d6845f0f268637ba50c0005657eb3cf096b92f753b42ef4dc"
      error_message = "terraform_version is ${var.terraform_version}: set terraform_sha256 to the SHA-256 of terraform_${var.terraform_version}_linux_amd64.zip from HashiCorp's SHA256SUMS."
    }

    precondition {
      condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_+=,.@-]{2,46}$", local.client_prefix))
      error_message = "The client resource prefix ${local.client_prefix} (from machine.software) must be 3 to 47 characters allowed in IAM names; change machine.software or set client_resource_prefix."
    }
  }
}

# stop_instance_before_detaching: the volume is mounted; stopping first lets lablink shut
# down cleanly and the file system unmount before the volume moves to a new instance.
resource "aws_volume_attachment" "data" {
  device_name                    = "/dev/sdf"
  volume_id                      = aws_ebs_volume.data.id
  instance_id                    = aws_instance.allocator.id
  stop_instance_before_detaching = true
}

data "aws_eip" "persistent" {
  count = var.eip_strategy == "persistent" ? 1 : 0

  filter {
    name   = "tag:Name"
    values = ["${var.deployment_name}-eip-${var.environment}"]
  }
}

resource "aws_eip" "dynamic" {
  count  = var.eip_strategy == "dynamic" ? 1 : 0
  domain = "vpc"
  tags   = { Name = "${local.name}-eip" }
}

resource "aws_eip_association" "allocator" {
  instance_id   = aws_instance.allocator.id
  allocation_id = local.eip_allocation_id
}

data "aws_route53_zone" "parent" {
  count        = local.manage_dns && var.route53_zone_id == "" ? 1 : 0
  name         = local.parent_domain
  private_zone = false
}

resource "aws_route53_record" "allocator" {
  count   = local.manage_dns ? 1 : 0
  zone_id = var.route53_zone_id != "" ? var.route53_zone_id : data.aws_route53_zone.parent[0].zone_id
  name    = var.domain_name
  type    = "A"
  ttl     = 60
  records = [local.public_ip]
}
