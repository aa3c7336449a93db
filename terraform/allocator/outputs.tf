output "allocator_url" {
  description = "Where participants, admins and the client VMs' agents reach the allocator"
  value       = local.allocator_url
}

output "allocator_public_ip" {
  description = "The Elastic IP of the allocator"
  value       = local.public_ip
}

output "allocator_fqdn" {
  description = "domain_name, or \"\" when the allocator is reached by address"
  value       = var.domain_name
}

output "instance_id" {
  value = aws_instance.allocator.id
}

output "ssh_key_name" {
  description = "EC2 key pair of the allocator (SSH needs ssh_cidr_blocks)"
  value       = aws_key_pair.allocator.key_name
}

output "private_key_pem" {
  description = "Private key of ssh_key_name: terraform output -raw private_key_pem > allocator.pem"
  value       = tls_private_key.allocator.private_key_pem
  sensitive   = true
}

output "client_resource_prefix" {
  description = "Prefix of the client VM resources the allocator's role may create and destroy"
  value       = local.client_prefix
}
