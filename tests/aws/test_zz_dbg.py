from tests.aws.test_aws_platform import aws_plan
def test_dbg(platform, ec2, ami, cluster_name):
    platform.up(aws_plan(cluster_name, ami, size=1))
    for e in ec2.describe_network_interfaces(Filters=[{"Name": "tag:hapair:cluster", "Values": [cluster_name]}])["NetworkInterfaces"]:
        print(e["NetworkInterfaceId"], e["PrivateIpAddresses"], e.get("TagSet"))
    assert 0
