terraform {
  # 1.11: write-only arguments (secret_string_wo in secrets.tf), which keep the
  # stream token secret out of plan and state; 1.10 brought the ephemeral
  # resources that generate it; 1.9 the cross-variable validations.
  required_version = ">= 1.11.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0" # secret_string_wo / secret_string_wo_version are in every 6.x
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.4" # zips the blue/green hook (codedeploy.tf)
    }
    random = {
      source = "hashicorp/random"
      # 3.7.1 is the first release with the ephemeral random_password.
      version = ">= 3.7.1, < 4.0.0"
    }
  }

  # No credential is kept in state (README.md, "Secrets"), but state still
  # maps the whole stack: keep it in an encrypted, access-controlled backend.
  # Configure it at init time, e.g.
  #   terraform init -backend-config=backend.hcl
  # with bucket, key, region, encrypt = true and use_lockfile = true.
  backend "s3" {}
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge(var.tags, {
      Project     = var.project
      Environment = var.environment
      ManagedBy   = "terraform"
    })
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

data "aws_availability_zones" "selected" {
  state = "available"
  filter {
    name   = "zone-name"
    values = [for z in var.availability_zones : "${var.aws_region}${z}"]
  }
}

locals {
  name       = "${var.project}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region
  az_count   = length(var.availability_zones)
  azs        = sort(data.aws_availability_zones.selected.names)

  container_port = 8080
  # Model artefacts live under this prefix of the model bucket; tasks may only read it.
  model_prefix = trimsuffix(var.model_prefix, "/")
}
