# NixOS module: declarative routes inside systemd-nspawn machines, applied by
# `machnet apply` from a oneshot unit bound to each machine's unit.
#
#   imports = [ /path/to/machnet/nixos/module.nix ];
#   services.machnet = {
#     enable = true;
#     machines.web.routes = [
#       { destination = "10.99.0.0/16"; gateway = "10.231.0.1"; dev = "eth0"; }
#     ];
#   };
{ config, lib, pkgs, ... }:
let
  cfg = config.services.machnet;

  routeTypes = [
    "unicast"
    "local"
    "broadcast"
    "multicast"
    "anycast"
    "blackhole"
    "unreachable"
    "prohibit"
    "throw"
    "nat"
  ];

  routeOptions = {
    options = {
      destination = lib.mkOption {
        type = lib.types.str;
        example = "10.99.0.0/16";
        description = ''
          Destination prefix: `default`, an IPv4 or IPv6 prefix such as
          `10.99.0.0/16` or `fd00:99::/64`, or a host address.
        '';
      };
      gateway = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "10.231.0.1";
        description = "Next hop (`via`), or null for a directly connected route.";
      };
      dev = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "eth0";
        description = "Output device inside the machine, or null to let the kernel pick it from the gateway.";
      };
      metric = lib.mkOption {
        type = lib.types.nullOr lib.types.ints.u32;
        default = null;
        example = 100;
        description = "Route metric (preference), or null for the kernel's default.";
      };
      table = lib.mkOption {
        type = lib.types.nullOr (lib.types.either lib.types.ints.u32 lib.types.str);
        default = null;
        example = "main";
        description = "Routing table, by number or by a name from rt_tables; null means `main`.";
      };
      type = lib.mkOption {
        type = lib.types.nullOr (lib.types.enum routeTypes);
        default = null;
        example = "blackhole";
        description = "Route type, as `ip route` names it; null means `unicast`.";
      };
      src = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "10.231.0.2";
        description = "Preferred source address for traffic that takes this route.";
      };
      mtu = lib.mkOption {
        type = lib.types.nullOr lib.types.ints.u32;
        default = null;
        example = 1400;
        description = "Path MTU for this route, or null for the device's.";
      };
      onlink = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Treat the gateway as on-link even when no prefix of the device covers it.";
      };
      proto = lib.mkOption {
        type = lib.types.nullOr (lib.types.either lib.types.ints.u8 lib.types.str);
        default = null;
        example = "machnet";
        description = ''
          Routing protocol the route is tagged with. Leave it null: machnet then tags
          the route with its own protocol (109, `machnet`), and only routes with that
          protocol are removed when they are no longer declared.
        '';
      };
    };
  };

  machineOptions = { name, config, ... }: {
    options = {
      routes = lib.mkOption {
        type = lib.types.listOf (lib.types.submodule routeOptions);
        default = [ ];
        example = lib.literalExpression ''
          [
            { destination = "10.99.0.0/16"; gateway = "10.231.0.1"; dev = "eth0"; metric = 100; }
            { destination = "198.51.100.0/24"; type = "blackhole"; }
          ]
        '';
        description = ''
          The routes the machine's network namespace should have. machnet adds the
          missing ones and deletes routes of its own protocol that are not listed,
          so an empty list removes every route machnet added before.
        '';
      };
      nixosContainer = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Whether the machine is a NixOS container declared in `containers.<name>`.
          Set it to false for other machines, such as one from `systemd.nspawn`.
        '';
      };
      unit = lib.mkOption {
        type = lib.types.str;
        default =
          if config.nixosContainer
          then "container@${name}.service"
          else "systemd-nspawn@${name}.service";
        defaultText = lib.literalExpression ''
          if nixosContainer then "container@<name>.service" else "systemd-nspawn@<name>.service"
        '';
        description = ''
          The unit that runs the machine. The routes are applied each time it starts
          and the route unit stops with it.
        '';
      };
      waitSeconds = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = 30;
        description = ''
          How long `machnet apply` waits for the machine to be registered with
          systemd-machined and for the declared devices to appear.
        '';
      };
    };
  };

  # Exactly the keys `machnet apply` reads; unknown keys are an error there and
  # absent ones mean "not given", so nulls are left out.
  routeJSON = route: lib.filterAttrs (_: value: value != null) {
    inherit (route) destination gateway dev metric table type src mtu onlink proto;
  };

  # One file per machine, so changing one machine's routes restarts only its unit.
  routesFile = name: machine: pkgs.writeText "machnet-${name}.json" (builtins.toJSON {
    machines.${name}.routes = map routeJSON machine.routes;
  });

  # Every machine's routes in one file, for the repair service.
  allRoutesFile = pkgs.writeText "machnet-routes.json" (builtins.toJSON {
    machines = lib.mapAttrs (_: machine: { routes = map routeJSON machine.routes; }) machines;
  });

  # Hostname characters, as systemd-machined wants in machine names; this also
  # keeps the unit name and ExecStart free of anything that needs escaping.
  validName = name: builtins.match "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}" name != null;
  # Units and files only for valid names, so a bad one reaches its assertion
  # instead of failing earlier on a store path or unit name.
  machines = lib.filterAttrs (name: _: validName name) cfg.machines;

  # Shared by the route units and the audit: what machnet needs, and no more.
  hardening = {
    # Runs as root, so no AmbientCapabilities; the bounding set caps what root keeps.
    # CAP_SYS_ADMIN: setns(2) into the machine's network namespace.
    # CAP_NET_ADMIN: adding and deleting routes there.
    # CAP_SYS_PTRACE: opening /proc/<leader>/ns/net is a ptrace read-access check,
    # which root passes without this capability only if its capabilities are a
    # superset of the leader's and both share a user namespace. Cut down to this
    # set, ours never cover a container init's, and a user-namespaced machine
    # (PrivateUsers, privateUsers = "pick") fails the second test anyway; so
    # without it the open fails with EACCES. ptrace(2), pidfd_getfd(2) and
    # process_vm_*(2) stay blocked by SystemCallFilter below.
    CapabilityBoundingSet = [
      "CAP_SYS_ADMIN"
      "CAP_NET_ADMIN"
      "CAP_SYS_PTRACE"
    ];
    NoNewPrivileges = true;
    # setns with an explicit CLONE_NEWNET is all machnet needs; systemd's filter
    # refuses setns(fd, 0), which machnet never calls.
    RestrictNamespaces = "net";
    # AF_UNIX for the system bus (systemd-machined), AF_NETLINK for routes.
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_NETLINK"
      "AF_INET"
      "AF_INET6"
    ];
    # machnet sends no IP traffic of its own.
    IPAddressDeny = "any";
    SystemCallArchitectures = "native";
    # @system-service includes @process, which has setns and pidfd_open.
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
      "~@resources"
      "~process_vm_readv process_vm_writev"
    ];
    SystemCallErrorNumber = "EPERM";
    # Not ProtectProc = "invisible", PrivatePIDs, PrivateUsers or PrivateNetwork:
    # machnet must see the machine's leader in /proc, read its ns/net and cgroup
    # files, and act from the host's namespaces. Not ProcSubset = "pid" either:
    # machnet reads /proc/sys/net too.
    PrivateMounts = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectKernelLogs = true;
    ProtectKernelModules = true;
    ProtectKernelTunables = true;
    # Read-only cgroupfs is enough: machnet only reads /proc/<pid>/cgroup.
    ProtectControlGroups = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    UMask = "0077";
  };

  auditCommand = lib.escapeShellArgs ([ "${cfg.package}/bin/machnet" "audit" ]
    ++ lib.concatMap (rule: [ "--skip" rule ]) cfg.audit.skipRules);

  # audit exits 11 (worst finding a warning) or 12 (an error): findings, not a
  # failure of the unit. The Prometheus file is replaced in one rename, so the
  # textfile collector never reads half of it.
  auditScript = pkgs.writeShellScript "machnet-audit" (
    if cfg.audit.textfileDirectory == null then ''
      ${auditCommand}
    '' else ''
      set -o pipefail
      out=${lib.escapeShellArg cfg.audit.textfileDirectory}/machnet.prom
      rc=0
      ${auditCommand} --prometheus > "$out.$$" || rc=$?
      if [ "$rc" -eq 0 ] || [ "$rc" -eq 11 ] || [ "$rc" -eq 12 ]; then
        mv "$out.$$" "$out"
      else
        rm -f "$out.$$"
      fi
      exit "$rc"
    ''
  );

  routesService = name: machine: lib.nameValuePair "machnet-routes-${name}" {
    description = "machnet routes of machine ${name}";
    documentation = [ "man:machnet-apply(1)" ];
    # Started with the machine (and restarted with it, through BindsTo), after it,
    # and stopped when it goes away.
    after = [ machine.unit ];
    bindsTo = [ machine.unit ];
    wantedBy = [ machine.unit ];

    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      ExecStart = "${cfg.package}/bin/machnet apply --wait ${toString machine.waitSeconds} --machine ${name} ${routesFile name machine}";

      # machnet takes a per-namespace flock under /run/machnet. All route units
      # share the directory, so it must outlive each of them.
      RuntimeDirectory = "machnet";
      RuntimeDirectoryMode = "0700";
      RuntimeDirectoryPreserve = "yes";
    } // hardening;
  };
in
{
  options.services.machnet = {
    enable = lib.mkEnableOption "machnet, declarative routes inside systemd-nspawn machines";

    package = lib.mkOption {
      type = lib.types.package;
      # machnet is not in nixpkgs: use an overlay's pkgs.machnet when there is
      # one, else build this checkout.
      default = pkgs.machnet or (pkgs.callPackage ./package.nix { });
      defaultText = lib.literalExpression "pkgs.machnet or (pkgs.callPackage ./package.nix { })";
      description = "The machnet package to use.";
    };

    audit = {
      enable = lib.mkEnableOption "a periodic `machnet audit` of every machine, on a timer";

      interval = lib.mkOption {
        type = lib.types.str;
        default = "15min";
        example = "1h";
        description = "Time between audits (a systemd time span, for OnUnitActiveSec).";
      };

      skipRules = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "shares-host-netns" ];
        description = "Audit rules to leave out (`machnet audit --list-rules` lists them).";
      };

      textfileDirectory = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/var/lib/prometheus-node-exporter-text-files";
        description = ''
          Where to write `machnet.prom` (Prometheus text format) for node_exporter's
          textfile collector; null writes the findings to the journal only.
        '';
      };
    };

    repair = {
      enable = lib.mkEnableOption ''
        a `machnet watch --reapply` service that puts declared routes back the
        moment they vanish (drift repair; it backs off and says so in the journal
        when something else keeps removing them)
      '';
    };

    machines = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule machineOptions);
      default = { };
      example = lib.literalExpression ''
        {
          web.routes = [
            { destination = "10.99.0.0/16"; gateway = "10.231.0.1"; dev = "eth0"; }
          ];
        }
      '';
      description = ''
        Machines (by their systemd-machined name) whose routes machnet manages.
        Each gets a unit `machnet-routes-<name>` that runs `machnet apply` whenever
        the machine's unit starts.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = lib.concatLists (lib.mapAttrsToList
      (name: machine: [
        {
          assertion = validName name;
          message = "services.machnet.machines.${name}: not a valid machine name (letters, digits, '_', '.', '-'; at most 64).";
        }
        {
          assertion = machine.nixosContainer -> config.containers ? ${name};
          message = "services.machnet.machines.${name}: there is no containers.${name}; declare it, or set nixosContainer = false for a machine that is not a NixOS container.";
        }
      ])
      cfg.machines);

    environment.systemPackages = [ cfg.package ];

    environment.etc = {
      # Lets `ip route` print protocol 109 as "machnet".
      "iproute2/rt_protos.d/machnet.conf".source =
        "${cfg.package}/etc/iproute2/rt_protos.d/machnet.conf";
    }
    # The files the units apply, for `machnet apply --check --machine NAME
    # /etc/machnet/NAME.json` by hand.
    // lib.mapAttrs'
      (name: machine: lib.nameValuePair "machnet/${name}.json" {
        source = routesFile name machine;
      })
      machines;

    systemd.services = lib.mapAttrs' routesService machines
      // lib.optionalAttrs cfg.repair.enable {
      machnet-repair = {
        description = "machnet: declared routes put back when they vanish";
        documentation = [ "man:machnet-watch(1)" ];
        after = [ "systemd-machined.service" ];
        wantedBy = [ "multi-user.target" ];
        serviceConfig = {
          ExecStart = lib.escapeShellArgs ([ "${cfg.package}/bin/machnet" "watch" "--reapply" "${allRoutesFile}" ]
            ++ lib.attrNames machines);
          Restart = "on-failure";
          RestartSec = "5s";
          # The same per-namespace apply lock as the route units.
          RuntimeDirectory = "machnet";
          RuntimeDirectoryMode = "0700";
          RuntimeDirectoryPreserve = "yes";
        } // hardening;
      };
    }
      // lib.optionalAttrs cfg.audit.enable {
      machnet-audit = {
        description = "machnet audit of every machine's network";
        documentation = [ "man:machnet-audit(1)" ];
        after = [ "systemd-machined.service" ];
        # nft, for the NAT rule
        path = [ pkgs.nftables ];
        serviceConfig = {
          Type = "oneshot";
          ExecStart = auditScript;
          SuccessExitStatus = [ 11 12 ];
          ReadWritePaths = lib.optional (cfg.audit.textfileDirectory != null) cfg.audit.textfileDirectory;
        } // hardening // {
          # machnet.prom must be readable by node_exporter's own user.
          UMask = "0022";
        };
      };
    };

    systemd.timers = lib.mkIf cfg.audit.enable {
      machnet-audit = {
        description = "Periodic machnet audit";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnBootSec = "2min";
          OnUnitActiveSec = cfg.audit.interval;
        };
      };
    };
  };
}
