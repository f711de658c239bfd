"""Helpers of the AWS suites: stand-ins for ECR, ElastiCache, RDS and the AWS APIs."""
