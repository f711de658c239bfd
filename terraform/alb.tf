# Scale path: Application Load Balancer in its own (edge) subnets, forwarding
# to the app instances' nginx on port 80. Clients: allowed_http_cidrs on HTTP
# 80, or HTTPS 443 with certificate_arn (then 80 only redirects, and with the
# write API on port 80 is not opened at all); the load generator in the VPC.
resource "aws_lb" "app" {
  count = var.enable_alb ? 1 : 0
  #checkov:skip=CKV_AWS_91: lab - ALB access logs need an S3 bucket with a bucket policy; the container logs in CloudWatch carry the request log
  #checkov:skip=CKV_AWS_150: lab - the ALB is meant to be destroyed with the rest of the stack
  #checkov:skip=CKV2_AWS_20: HTTP redirects to HTTPS when certificate_arn is set; without a certificate there is no HTTPS listener to redirect to
  #checkov:skip=CKV2_AWS_28: lab - no WAF (about $5+/month); the ALB admits only allowed_http_cidrs and nginx rate-limits per client
  #checkov:skip=CKV2_AWS_76: lab - no WAF (see CKV2_AWS_28)

  name                       = "${var.name}-alb"
  load_balancer_type         = "application"
  internal                   = false
  security_groups            = [aws_security_group.alb[0].id]
  subnets                    = aws_subnet.edge[*].id
  drop_invalid_header_fields = true
  enable_deletion_protection = false
}

resource "aws_lb_target_group" "app" {
  count = var.enable_alb ? 1 : 0
  #checkov:skip=CKV_AWS_378: lab - TLS ends at the ALB: traffic stays inside the VPC between ALB and nginx

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

locals {
  https = var.enable_alb && var.certificate_arn != ""
}

resource "aws_lb_listener" "http" {
  count = var.enable_alb ? 1 : 0
  #checkov:skip=CKV_AWS_2: HTTP forwards only without certificate_arn (a lab without a domain; restrict allowed_http_cidrs); with one it redirects to HTTPS
  #checkov:skip=CKV_AWS_103: HTTP listener, no TLS policy applies (see CKV_AWS_2)

  load_balancer_arn = aws_lb.app[0].arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = local.https ? "redirect" : "forward"
    target_group_arn = local.https ? null : aws_lb_target_group.app[0].arn

    dynamic "redirect" {
      for_each = local.https ? [1] : []
      content {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
  }
}

resource "aws_lb_listener" "https" {
  count = local.https ? 1 : 0

  load_balancer_arn = aws_lb.app[0].arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.app[0].arn
  }
}
