# The domain XML vagrant-libvirt's own CreateDomain action gives libvirt for a Vagrantfile, captured
# at the call that would define the domain: the action runs whole (every setting it reads from the
# provider config, the serial log's directory), only libvirt's connection is a recorder. Prints the
# XML; the test hands it to libvirt's schema and parser (virsh define --validate).
require 'vagrant'
require 'vagrant-libvirt'
require 'vagrant-libvirt/action/create_domain'
require 'vagrant-libvirt/util/byte_number'

cwd, name = ARGV.fetch(0), (ARGV[1] || 'default')
env = Vagrant::Environment.new(cwd: cwd, ui_class: Vagrant::UI::Silent)
machine = env.machine(name.to_sym, :libvirt)
domain_name = machine.provider_config.default_prefix.to_s + name

captured = nil
servers = Object.new
servers.define_singleton_method(:create) { |xml:| captured = xml; Struct.new(:id).new('captured') }
volumes = Object.new
volumes.define_singleton_method(:all) { |name:| [Struct.new(:pool_name).new('default')] }
connection = Struct.new(:servers, :volumes).new(servers, volumes)
driver = Struct.new(:connection).new(connection)
machine.provider.define_singleton_method(:driver) { driver }
# The box is not in this Vagrant home: the action only prints its name.
box = Struct.new(:name, :version).new(machine.config.vm.box, '0')
machine.define_singleton_method(:box) { box }

# The box's disk as vagrant-libvirt's ResolveDiskSettings hands it on (one qcow2 volume in 'default').
volume = { name: "#{domain_name}.img", device: 'vda', bus: 'virtio', cache: 'default', pool: 'default',
           absolute_path: "/var/lib/libvirt/images/#{domain_name}.img", path: "#{domain_name}.img",
           virtual_size: ByteNumber.from_GB(20) }
action_env = { machine: machine, ui: machine.ui, domain_name: domain_name, root_path: env.root_path,
               domain_volumes: [volume], disks: [] }
VagrantPlugins::ProviderLibvirt::Action::CreateDomain.new(->(_e) {}, action_env).call(action_env)
raise 'CreateDomain did not define a domain' if captured.nil?
puts captured
