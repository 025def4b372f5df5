# One site's settings: edit this file (or replace it) for your network and policy.
{ ... }:
{
  networking.hostName = "stapsteen";

  # The appliance has a leg in the admin network, one in the management network and one in
  # the security team's review network.
  systemd.network.networks = {
    "10-admin" = {
      matchConfig.Name = "eth0";
      address = [ "10.10.0.5/24" ];
    };
    "20-management" = {
      matchConfig.Name = "eth1";
      address = [ "10.20.0.1/24" ];
    };
    "30-review" = {
      matchConfig.Name = "eth2";
      address = [ "10.30.0.5/24" ];
    };
  };
  services.timesyncd.servers = [ "10.10.0.1" ];

  services.stapsteen = {
    enable = true;
    policyFile = ../policies/example-hospital.toml;
    listen = [ "10.10.0.5:22" ];
    adminNetworks = [ "10.10.0.0/24" ];
    managementNetworks = [ "10.20.0.0/24" "2001:db8:20::/64" ];
    # The review console, for the CISO office's network.
    console = {
      enable = true;
      listen = [ "10.30.0.5:443" ];
      host = "stapsteen.ziekenhuis.local";
      reviewerNetworks = [ "10.30.0.0/24" ];
    };
    # logForwarding.url = "https://siem.example.org:19532";
  };
}
