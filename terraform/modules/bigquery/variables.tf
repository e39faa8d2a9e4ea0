variable "project_id" {
  type        = string
  description = "Project of the datasets."
}

variable "dataset_id" {
  type        = string
  description = "Control dataset (CONTROL_DATASET)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{2,49}$", var.dataset_id))
    error_message = "dataset_id must match ^[a-z][a-z0-9_]{2,49}$ like CONTROL_DATASET."
  }
}

variable "location" {
  type        = string
  description = "Dataset location (BIGQUERY_LOCATION)."
}

variable "tenant_data_role_id" {
  type        = string
  description = "Id of the custom role for table reads and writes without dataset creation."
  default     = "convergenceTenantData"
}

variable "job_users" {
  type        = map(string)
  description = "Members that run query and load jobs, keyed by a static name."
  default     = {}
}

variable "dataset_creators" {
  type        = map(string)
  description = "Members that create tenant datasets and their tables (roles/bigquery.dataEditor), keyed by a static name."
  default     = {}
}

variable "tenant_data_members" {
  type        = map(string)
  description = "Members that read and write tables of existing datasets (the custom role), keyed by a static name."
  default     = {}
}

variable "labels" {
  type        = map(string)
  description = "Labels of the control dataset."
  default     = {}
}
