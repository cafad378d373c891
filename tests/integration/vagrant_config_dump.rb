# Load a Vagrantfile with the real Vagrant library and print, as JSON, the values Vagrant ended up
# with: the test compares them byte for byte with what the box file said.
require 'vagrant'
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
    'synced_folders' => config.vm.synced_folders.values.map { |f| [f[:hostpath], f[:guestpath], f[:type].to_s, f[:disabled] ? true : false] },
  }
end
puts JSON.generate(machines)
