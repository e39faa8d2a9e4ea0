variable "project_id" {
  type        = string
  description = "Project that holds the key ring."
}

variable "location" {
  type        = string
  description = "Cloud KMS location of the key ring, e.g. us-central1 or us."
}

variable "key_ring_name" {
  type        = string
  description = "Name of the key ring."
}

variable "crypto_key_name" {
  type        = string
  description = "Name of the symmetric key that wraps tenant keysets."
}

variable "rotation_period" {
  type        = string
  description = "How often Cloud KMS makes a new primary version, in seconds with an s suffix (at most 90 days)."
  default     = "7776000s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.rotation_period)) && try(tonumber(trimsuffix(var.rotation_period, "s")) <= 7776000, false)
    error_message = "rotation_period must be like \"7776000s\" and at most 90 days (7776000s)."
  }
}

variable "protection_level" {
  type        = string
  description = "SOFTWARE or HSM protection for new key versions."
  default     = "SOFTWARE"

  validation {
    condition     = contains(["SOFTWARE", "HSM"], var.protection_level)
    error_message = "protection_level must be SOFTWARE or HSM."
  }
}

variable "encrypters" {
  type        = map(string)
  description = "Members allowed to Encrypt with the key (wrap a new tenant keyset), keyed by a static name."
  default     = {}
}

variable "decrypters" {
  type        = map(string)
  description = "Members allowed to Decrypt with the key (unwrap a tenant keyset), keyed by a static name."
  default     = {}
}

variable "labels" {
  type        = map(string)
  description = "Labels of the crypto key."
  default     = {}
}
