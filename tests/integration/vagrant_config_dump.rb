# Load a Vagrantfile with the real Vagrant library and print, as JSON, the values Vagrant ended up
# with: the test compares them byte for byte with what the box file said. 'domain_xml' is the domain
# definition vagrant-libvirt's own template (domain.xml.erb) makes of that configuration, which is
# what libvirt is given.
require 'vagrant'
require 'vagrant-libvirt'
require 'vagrant-libvirt/util/erb_template'
require 'json'

env = Vagrant::Environment.new(cwd: ARGV.fetch(0), ui_class: Vagrant::UI::Silent)
vagrantfile = env.vagrantfile
machines = {}
vagrantfile.machine_names.each do |name|
  config = vagrantfile.machine_config(name, :libvirt, env.boxes, nil, false)[:config]
  libvirt = config.vm.get_provider_config(:libvirt)
  machines[name.to_s] = {
    'box' => config.vm.box,
    'box_version' => config.vm.box_version,
    'box_url' => config.vm.box_url,
    'description' => libvirt.description,
    'driver' => libvirt.driver,
    'memory' => libvirt.memory,
    'default_prefix' => libvirt.default_prefix,
    'private_key_path' => config.ssh.private_key_path,
    'synced_folders' => config.vm.synced_folders.values.map { |f| [f[:hostpath], f[:guestpath], f[:type].to_s, f[:disabled] ? true : false] },
    'ansible' => config.vm.provisioners.select { |p| p.type.to_s == 'ansible' }.map { |p|
      { 'playbook' => p.config.playbook, 'raw_ssh_args' => p.config.raw_ssh_args }
    },
  }
  # The provider's create_domain action renders the same template from the same object.
  libvirt.extend(VagrantPlugins::ProviderLibvirt::Util::ErbTemplate)
  libvirt.instance_variable_set(:@name, libvirt.default_prefix.to_s + name.to_s)
  libvirt.instance_variable_set(:@domain_volumes, [])
  # As create_domain.rb sets it before rendering (the names of the <sysinfo> blocks).
  libvirt.instance_variable_set(:@sysinfo_blocks, {'bios' => {xml: 'bios'}, 'system' => {xml: 'system'},
                                                   'base board' => {xml: 'baseBoard'}, 'chassis' => {xml: 'chassis'},
                                                   'oem strings' => {xml: 'oemStrings'}})
  machines[name.to_s]['domain_xml'] = libvirt.to_xml('domain')
end
puts JSON.generate(machines)
