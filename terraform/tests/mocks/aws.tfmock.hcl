# Values the mocked hashicorp/aws provider returns during `terraform test`.
# Data sources must look real enough for the configuration to evaluate
# (AMI id, AZ names, policy JSON, ...); a few resources get realistic
# computed attributes (ECR URLs, ARNs) so string building can be asserted.

mock_data "aws_availability_zones" {
  defaults = {
    names    = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    zone_ids = ["euw1-az1", "euw1-az2", "euw1-az3"]
  }
}

mock_data "aws_ssm_parameter" {
  defaults = {
    value          = "ami-0123456789abcdef0"
    insecure_value = "ami-0123456789abcdef0"
    type           = "String"
  }
}

mock_data "aws_iam_policy_document" {
  defaults = {
    json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
  }
}

mock_data "aws_caller_identity" {
  defaults = {
    account_id = "123456789012"
    arn        = "arn:aws:iam::123456789012:user/test"
    user_id    = "AIDAMOCKMOCKMOCKMOCK"
  }
}

mock_data "aws_region" {
  defaults = {
    name = "eu-west-1"
  }
}

mock_data "aws_partition" {
  defaults = {
    partition  = "aws"
    dns_suffix = "amazonaws.com"
  }
}

mock_data "aws_secretsmanager_random_password" {
  defaults = {
    random_password = "MockAuthToken0123456789abcdefghijKLMNOPQRSTUVwxyz"
  }
}

mock_data "aws_ecr_image" {
  defaults = {
    image_digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  }
}

mock_resource "aws_lb" {
  defaults = {
    arn        = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/cachelab-alb/0123456789abcdef"
    arn_suffix = "app/cachelab-alb/0123456789abcdef"
    dns_name   = "cachelab-alb-123456789.eu-west-1.elb.amazonaws.com"
  }
}

mock_resource "aws_elasticache_replication_group" {
  defaults = {
    primary_endpoint_address       = "master.cachelab-cache.abcdef.euw1.cache.amazonaws.com"
    reader_endpoint_address        = "replica.cachelab-cache.abcdef.euw1.cache.amazonaws.com"
    configuration_endpoint_address = "clustercfg.cachelab-cache.abcdef.euw1.cache.amazonaws.com"
  }
}

mock_resource "aws_db_instance" {
  defaults = {
    address    = "cachelab-db.abcdefghijkl.eu-west-1.rds.amazonaws.com"
    endpoint   = "cachelab-db.abcdefghijkl.eu-west-1.rds.amazonaws.com:5432"
    port       = 5432
    identifier = "cachelab-db"
    master_user_secret = [{
      kms_key_id    = "arn:aws:kms:eu-west-1:123456789012:key/mock"
      secret_arn    = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-mock-AbCdEf"
      secret_status = "active"
    }]
  }
}

mock_data "aws_instances" {
  defaults = {
    ids         = ["i-0123456789abcdef0"]
    public_ips  = ["203.0.113.10"]
    private_ips = ["10.40.0.10"]
  }
}

mock_resource "aws_ecr_repository" {
  defaults = {
    arn            = "arn:aws:ecr:eu-west-1:123456789012:repository/cachelab/app"
    repository_url = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cachelab/app"
  }
}



mock_resource "aws_secretsmanager_secret" {
  defaults = {
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cachelab-cache-auth-AbCdEf"
  }
}

mock_resource "aws_cloudwatch_log_group" {
  defaults = {
    arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/cachelab/containers"
  }
}

mock_resource "aws_iam_instance_profile" {
  defaults = {
    arn = "arn:aws:iam::123456789012:instance-profile/cachelab-app-mock"
  }
}

mock_resource "aws_launch_template" {
  defaults = {
    id             = "lt-0123456789abcdef0"
    arn            = "arn:aws:ec2:eu-west-1:123456789012:launch-template/lt-0123456789abcdef0"
    latest_version = 1
  }
}



mock_resource "aws_iam_role" {
  defaults = {
    arn = "arn:aws:iam::123456789012:role/cachelab-app-mock"
  }
}

mock_resource "aws_autoscaling_group" {
  defaults = {
    name = "cachelab-app-20260101000000000000000001"
    arn  = "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:mock:autoScalingGroupName/cachelab-app-mock"
  }
}

mock_resource "aws_db_parameter_group" {
  defaults = {
    name = "cachelab-pg16-20260101000000000000000001"
  }
}

# Distinct, known ids for the resources whose identity the assertions compare
# (mocked computed attributes are otherwise unknown during plan).
override_resource {
  target          = aws_security_group.app
  override_during = plan
  values          = { id = "sg-0a0a0a0a0a0a0a0a0" }
}
override_resource {
  target          = aws_security_group.db
  override_during = plan
  values          = { id = "sg-0d0d0d0d0d0d0d0d0" }
}
override_resource {
  target          = aws_security_group.cache
  override_during = plan
  values          = { id = "sg-0c0c0c0c0c0c0c0c0" }
}
override_resource {
  target          = aws_security_group.alb[0]
  override_during = plan
  values          = { id = "sg-0b0b0b0b0b0b0b0b0" }
}
override_resource {
  target          = aws_subnet.public[0]
  override_during = plan
  values          = { id = "subnet-0a000000000000001" }
}
override_resource {
  target          = aws_subnet.public[1]
  override_during = plan
  values          = { id = "subnet-0a000000000000002" }
}
override_resource {
  target          = aws_subnet.private[0]
  override_during = plan
  values          = { id = "subnet-0d000000000000001" }
}
override_resource {
  target          = aws_subnet.private[1]
  override_during = plan
  values          = { id = "subnet-0d000000000000002" }
}
override_resource {
  target          = aws_route_table.public
  override_during = plan
  values          = { id = "rtb-0a0a0a0a0a0a0a0a0" }
}
override_resource {
  target          = aws_route_table.private
  override_during = plan
  values          = { id = "rtb-0d0d0d0d0d0d0d0d0" }
}

mock_resource "aws_cloudwatch_metric_alarm" {
  defaults = {
    arn = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:cachelab-mock"
  }
}

mock_data "aws_ec2_instance_type" {
  defaults = {
    supported_architectures = ["x86_64"]
    default_vcpus           = 2
  }
}

# The current version of each generated secret (no rotation yet: no AWSPREVIOUS).
mock_data "aws_secretsmanager_secret_version" {
  defaults = {
    secret_string = "MockAuthToken0123456789abcdefghijKLMNOPQRSTUVwxyz"
    version_id    = "00000000-0000-0000-0000-000000000001"
  }
}

# The cache user's secret is JSON (secrets.tf): the password and the previous
# one (the same before any rotation).
override_data {
  target = data.aws_secretsmanager_secret_version.current["cache_auth"]
  values = {
    secret_string = "{\"password\":\"MockAuthToken0123456789abcdefghijKLMNOPQRSTUVwxyz\",\"previous\":\"MockAuthToken0123456789abcdefghijKLMNOPQRSTUVwxyz\"}"
    version_id    = "00000000-0000-0000-0000-0000000000ca"
  }
}

mock_resource "aws_eip" {
  defaults = {
    allocation_id = "eipalloc-0123456789abcdef0"
    public_ip     = "203.0.113.10"
  }
}

mock_resource "aws_lb_target_group" {
  defaults = {
    arn        = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/app-mock/0123456789abcdef"
    arn_suffix = "targetgroup/app-mock/0123456789abcdef"
  }
}

mock_resource "aws_ecs_task_definition" {
  defaults = {
    arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/cachelab-db-init:1"
  }
}

mock_resource "aws_s3_bucket" {
  defaults = {
    arn    = "arn:aws:s3:::cachelab-loadgen-20260101000000000000000001"
    bucket = "cachelab-loadgen-20260101000000000000000001"
  }
}

mock_resource "aws_instance" {
  defaults = {
    id = "i-0loadgenmaster000"
  }
}

mock_resource "aws_elasticache_user_group" {
  defaults = {
    id  = "cachelab-cache"
    arn = "arn:aws:elasticache:eu-west-1:123456789012:usergroup:cachelab-cache"
  }
}

override_resource {
  target          = aws_subnet.edge[0]
  override_during = plan
  values          = { id = "subnet-0e000000000000001" }
}
override_resource {
  target          = aws_subnet.edge[1]
  override_during = plan
  values          = { id = "subnet-0e000000000000002" }
}
override_resource {
  target          = aws_subnet.loadgen[0]
  override_during = plan
  values          = { id = "subnet-0f000000000000001" }
}
override_resource {
  target          = aws_subnet.loadgen[1]
  override_during = plan
  values          = { id = "subnet-0f000000000000002" }
}
override_resource {
  target          = aws_security_group.loadgen[0]
  override_during = plan
  values          = { id = "sg-0f0f0f0f0f0f0f0f0" }
}
override_resource {
  target          = aws_security_group.db_init
  override_during = plan
  values          = { id = "sg-0e0e0e0e0e0e0e0e0" }
}
