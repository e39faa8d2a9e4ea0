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

# `any`: yamldecode gives an object whose entries differ in type ("*" or a list of tenants), which no
# map(object(...)) type can hold.
variable "schedules" {
  type        = any
  description = "configs/schedules.yml decoded: name => {cron, time_zone, template, tenants, parameters}."

  validation {
    condition = alltrue([
      for name, schedule in var.schedules :
      can(regex("^[A-Za-z0-9_]{1,64}$", name)) &&
      try(length(setsubtract(["cron", "time_zone", "template", "tenants", "parameters"], keys(schedule))) == 0, false)
    ])
    error_message = "every schedule needs a name of letters, digits and _ and exactly: cron, time_zone, template, tenants, parameters."
  }

  validation {
    condition = alltrue([
      for schedule in values(var.schedules) :
      can(regex("^[a-z][a-z0-9_]{0,49}/[a-z][a-z0-9_]{0,49}/[a-z][a-z0-9_]{0,49}$", schedule.template)) &&
      (schedule.tenants == "*" || can([for tenant in schedule.tenants : regex("^[a-z][a-z0-9_]{2,49}$", tenant)]))
    ])
    error_message = "template must be provider/domain/template and tenants \"*\" or a list of tenant ids."
  }
}
