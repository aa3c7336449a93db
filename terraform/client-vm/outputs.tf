output "vm_instance_names" {
  description = "VMs that exist in the state (not merely requested)"
  value       = keys(aws_instance.vm)
}

output "vm_instance_ids" {
  value = { for name, vm in aws_instance.vm : name => vm.id }
}

output "vm_public_ips" {
  value = { for name, vm in aws_instance.vm : name => vm.public_ip }
}

output "lablink_private_key_pem" {
  value     = tls_private_key.vm.private_key_pem
  sensitive = true
}

output "instance_terraform_apply_times" {
  description = "Per VM: seconds its creation took, with start and end (RFC 3339)"
  value = {
    for name, _ in local.vms : name => {
      seconds    = time_static.end[name].unix - time_static.start[name].unix
      start_time = time_static.start[name].rfc3339
      end_time   = time_static.end[name].rfc3339
    }
  }
}
