# One site's settings: edit this file (or replace it) for your network and policy.
{ ... }:
{
  networking.hostName = "stapsteen";

  # The appliance has one leg in the admin network and one in the management network.
  systemd.network.networks = {
    "10-admin" = {
      matchConfig.Name = "eth0";
      address = [ "10.10.0.5/24" ];
    };
    "20-management" = {
      matchConfig.Name = "eth1";
      address = [ "10.20.0.1/24" ];
    };
  };
  services.timesyncd.servers = [ "10.10.0.1" ];

  services.stapsteen = {
    enable = true;
    policyFile = ../policies/example-hospital.toml;
    listen = [ "10.10.0.5:22" ];
    adminNetworks = [ "10.10.0.0/24" ];
    managementNetworks = [ "10.20.0.0/24" "2001:db8:20::/64" ];
    # logForwarding.url = "https://siem.example.org:19532";
  };
}
