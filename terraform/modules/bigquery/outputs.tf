output "control_dataset" {
  description = "Dataset id of the control dataset."
  value       = google_bigquery_dataset.control.dataset_id
}

output "tenant_data_role" {
  description = "projects/P/roles/R of the tenant-data custom role."
  value       = google_project_iam_custom_role.tenant_data.id
}
