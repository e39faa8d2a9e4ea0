variable "project_id" {
  type        = string
  description = "Project of the jobs."
}

variable "region" {
  type        = string
  description = "Cloud Scheduler region."
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every job name."
}

variable "topic_id" {
  type        = string
  description = "projects/P/topics/T of the schedules topic."
}

variable "retry_count" {
  type        = number
  description = "Retries of a publish that failed."
  default     = 3
}

variable "dispatchers" {
  type = map(object({
    cron        = string
    time_zone   = optional(string, "Etc/UTC")
    description = optional(string)
  }))
  description = "The dispatchers of configs/schedules.yml: cadence name => {cron, time_zone?, description?}."

  validation {
    condition     = alltrue([for name in keys(var.dispatchers) : can(regex("^[a-z][a-z0-9_-]{0,62}$", name))])
    error_message = "dispatcher names are lower-case letters, digits, _ and -, starting with a letter."
  }

  validation {
    condition     = length(var.dispatchers) > 0
    error_message = "configs/schedules.yml needs at least one dispatcher."
  }
}
