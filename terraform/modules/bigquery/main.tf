# The control dataset and who may do what in BigQuery. Tenant datasets are created at run time by the
# onboard function, so data access is granted at the project: dataset creation only to onboard, table
# reads and writes (no dataset creation or deletion) to the functions that run pipelines.

resource "google_bigquery_dataset" "control" {
  # checkov:skip=CKV_GCP_81: tenant datasets are created by code without CMEK, so CMEK here alone would protect nothing more; the secrets in this dataset are already envelope-encrypted with the Cloud KMS key
  project                    = var.project_id
  dataset_id                 = var.dataset_id
  location                   = var.location
  friendly_name              = "Convergence control plane"
  description                = "Profiles, subscriptions and quotas, API keys, integration credentials, tenant keysets, schedules."
  delete_contents_on_destroy = false
  labels                     = var.labels

  # Holds every tenant's wrapped keyset and API-key hashes: losing it locks every tenant out.
  lifecycle {
    prevent_destroy = true
  }
}

resource "google_project_iam_custom_role" "tenant_data" {
  project     = var.project_id
  role_id     = var.tenant_data_role_id
  title       = "Convergence tenant data"
  description = "Read and write tables of existing datasets; no dataset creation or deletion."
  permissions = [
    "bigquery.datasets.get",
    "bigquery.tables.create",
    "bigquery.tables.delete",
    "bigquery.tables.get",
    "bigquery.tables.getData",
    "bigquery.tables.list",
    "bigquery.tables.update",
    "bigquery.tables.updateData",
  ]
}

resource "google_project_iam_member" "job_user" {
  for_each = var.job_users

  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = each.value
}

resource "google_project_iam_member" "dataset_creator" {
  for_each = var.dataset_creators

  project = var.project_id
  role    = "roles/bigquery.dataEditor"
  member  = each.value
}

resource "google_project_iam_member" "tenant_data" {
  for_each = var.tenant_data_members

  project = var.project_id
  role    = google_project_iam_custom_role.tenant_data.id
  member  = each.value
}
