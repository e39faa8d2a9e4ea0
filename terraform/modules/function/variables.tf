variable "project_id" {
  type        = string
  description = "Project of the function."
}

variable "region" {
  type        = string
  description = "Region of the function and of its Cloud Run service."
}

variable "name" {
  type        = string
  description = "Name of the deployment (and of its Cloud Run service and source object)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,48}[a-z0-9]$", var.name))
    error_message = "name must be lower-case letters, digits and hyphens (a Cloud Run service name)."
  }
}

variable "description" {
  type        = string
  description = "What the deployment serves."
  default     = ""
}

variable "source_dir" {
  type        = string
  description = "Staged source folder (build/<source>/ with main.py, common/, configs/, requirements.txt)."
}

variable "archive_dir" {
  type        = string
  description = "Folder where the zip of source_dir is written before upload."
}

variable "source_bucket" {
  type        = string
  description = "Bucket the source archive is uploaded to, as <name>-<md5>.zip."
}

variable "runtime" {
  type        = string
  description = "Cloud Functions runtime."
  default     = "python311"
}

variable "entry_point" {
  type        = string
  description = "Decorated function in main.py that serves this deployment."
}

variable "signature_type" {
  type        = string
  description = "http or cloudevent, as the entry point's functions_framework decorator says."

  validation {
    condition     = contains(["http", "cloudevent"], var.signature_type)
    error_message = "signature_type must be http or cloudevent."
  }
}

variable "service_account_email" {
  type        = string
  description = "Service account the function runs as (one per function)."
}

variable "environment" {
  type        = map(string)
  description = "Runtime environment variables: Settings names (common/settings.py) upper-cased."
  default     = {}
}

variable "secret_environment" {
  type = map(object({
    secret  = string
    version = optional(string, "latest")
  }))
  description = "Environment variables read from Secret Manager, by variable name; the function's account may access exactly these secrets."
  default     = {}
}

variable "available_memory" {
  type        = string
  description = "Memory of an instance, e.g. 512Mi."
  default     = "512Mi"
}

variable "available_cpu" {
  type        = string
  description = "CPUs of an instance; null lets Cloud Functions derive it from the memory."
  default     = null
}

variable "timeout_seconds" {
  type        = number
  description = "Longest request; a push target's must not exceed the subscription's ack deadline."
}

variable "min_instance_count" {
  type        = number
  description = "Instances kept warm."
  default     = 0
}

variable "max_instance_count" {
  type        = number
  description = "Most instances at once (bounds BigQuery and KMS load)."
  default     = 10
}

variable "max_instance_request_concurrency" {
  type        = number
  description = "Requests one instance serves at once."
  default     = 1
}

variable "ingress_settings" {
  type        = string
  description = "ALLOW_ALL for the public HTTPS API; ALLOW_INTERNAL_ONLY for push targets."

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.ingress_settings)
    error_message = "ingress_settings must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "invoker_members" {
  type        = map(string)
  description = "Members granted run.invoker on the function's service, keyed by a static name."
  default     = {}
}

variable "labels" {
  type        = map(string)
  description = "Labels of the function."
  default     = {}
}
