# Runs a Logstash `ruby { code => ... }` snippet with a stand-in for Logstash's Event (get/set with
# field references, as logstash-core's Event does), so the pipeline's Ruby runs for real in tests.
# Input on stdin: {"code": "...", "events": [{...}, ...]}; output: the events after the code.
require "json"

class Event
  def initialize(data)
    @data = data
  end

  def get(ref)
    path(ref).reduce(@data) { |node, key| node.is_a?(Hash) ? node[key] : nil }
  end

  def set(ref, value)
    keys = path(ref)
    node = keys[0..-2].reduce(@data) do |n, key|
      n[key] = {} unless n[key].is_a?(Hash)
      n[key]
    end
    node[keys[-1]] = value
  end

  def to_hash
    @data
  end

  private

  def path(ref)
    ref.start_with?("[") ? ref.scan(/\[([^\]]+)\]/).flatten : [ref]
  end
end

def run(code, event)
  eval(code) # the ruby filter evaluates `code` with `event` in scope
  event.to_hash
end

input = JSON.parse($stdin.read)
puts JSON.generate(input["events"].map { |data| run(input["code"], Event.new(data)) })
