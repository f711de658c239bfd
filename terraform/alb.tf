# Scale path: Application Load Balancer in the public subnets, HTTP only from
# allowed_http_cidrs, forwarding to the app instances' nginx on port 80.
resource "aws_lb" "app" {
  count = var.enable_alb ? 1 : 0
  #checkov:skip=CKV_AWS_91: lab - ALB access logs need an S3 bucket with a bucket policy; the container logs in CloudWatch carry the request log
  #checkov:skip=CKV_AWS_150: lab - the ALB is meant to be destroyed with the rest of the stack
  #checkov:skip=CKV2_AWS_20: lab - no domain/certificate, so there is no HTTPS listener to redirect to
  #checkov:skip=CKV2_AWS_28: lab - no WAF (about $5+/month); the ALB admits only allowed_http_cidrs and nginx rate-limits per client
  #checkov:skip=CKV2_AWS_76: lab - no WAF (see CKV2_AWS_28)

  name                       = "${var.name}-alb"
  load_balancer_type         = "application"
  internal                   = false
  security_groups            = [aws_security_group.alb[0].id]
  subnets                    = aws_subnet.public[*].id
  drop_invalid_header_fields = true
  enable_deletion_protection = false
}

resource "aws_lb_target_group" "app" {
  count = var.enable_alb ? 1 : 0
  #checkov:skip=CKV_AWS_378: lab - TLS ends nowhere: traffic stays inside the VPC between ALB and nginx

  name_prefix = "app-"
  port        = 80
  protocol    = "HTTP"
  vpc_id      = aws_vpc.this.id
  target_type = "instance"

  deregistration_delay = 30

  health_check {
    path                = var.health_check_path
    matcher             = "200-399"
    interval            = 15
    timeout             = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "http" {
  count = var.enable_alb ? 1 : 0
  #checkov:skip=CKV_AWS_2: lab - no domain/certificate for HTTPS; restrict allowed_http_cidrs instead
  #checkov:skip=CKV_AWS_103: HTTP listener, no TLS policy applies (see CKV_AWS_2)

  load_balancer_arn = aws_lb.app[0].arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.app[0].arn
  }
}
